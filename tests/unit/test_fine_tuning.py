"""Replaying a starter's training images beside a project's (model.fine_tuning.replayed)."""

from dataclasses import replace

import pytest

from model.config import TrainSettings
from model.fine_tuning import REPLAY_SPLIT, own_lesions, replayed, schedule
from model.modeldir import CONFIG, META, WEIGHTS, ModelInfo
from model.records import Box, ImageRecord
from model.taxonomy import FULL


def record(name: str, *categories: str, split: str = "fold1") -> ImageRecord:
    return ImageRecord(image_id=name, path=f"{name}.png", width=100, height=80, split=split,
                       boxes=[Box(10, 10, 40, 40, c) for c in categories])


POOL = [record(f"b{i}", c) for i, c in enumerate("2345" * 5)] + [record("normal")]


def test_ratio_images_per_project_image_the_same_ones_first_as_the_project_grows():
    project = [record(f"p{i}", "5", split="train") for i in range(4)]
    first = replayed(POOL, project, ratio=1.5)
    assert len(first) == 6 and all(r.split == REPLAY_SPLIT for r in first)
    assert all(r.image_id.startswith("replay-b") or r.image_id == "replay-normal" for r in first)
    later = replayed(POOL, project * 2, ratio=1.5)
    assert later[:6] == first and len(later) == 12  # a later job replays these and more
    assert len(replayed(POOL, project * 10, ratio=1.5)) == len(POOL)  # no more than the pool holds
    assert replayed(POOL, project, ratio=0) == []
    assert [r.image_id for r in replayed(POOL, project, 1.5, seed=1)] != [r.image_id for r in first]
    with pytest.raises(ValueError, match="must be >= 0"):
        replayed(POOL, project, ratio=-1)


def test_only_images_the_projects_label_set_can_name():
    fine_project = [record("p", "4B", split="train")]  # a project that labels 4A/4B/4C
    kept = replayed(POOL, fine_project, ratio=100)
    assert {b.category for r in kept for b in r.boxes} == {"2", "3", "5"}  # a plain 4 has no place there
    assert len(kept) == len(POOL) - 5
    coarse_project = [record("p", "4", split="train")]
    fine_pool = [replace(record("f", "4C"), birads="4C")]
    [rolled] = replayed(fine_pool, coarse_project, ratio=1)
    assert rolled.boxes[0].category == rolled.birads == "4"  # rolled up, the image's category too
    # the project's label set as its config names it, before any of its boxes shows a subcategory
    assert replayed(POOL, coarse_project, ratio=100, labels=FULL) == kept


def test_every_prefix_replays_the_pools_category_shares():
    pool = ([record(f"two{i}", "2") for i in range(40)] + [record(f"four{i}", "4") for i in range(50)]
            + [record(f"five{i}", "5") for i in range(10)])  # 40 / 50 / 10 %
    project = [record("p", "3", split="train")]
    for ratio in (3, 10, 16, 48, 100):
        chosen = replayed(pool, project, ratio=ratio)
        for category, share in (("2", 0.4), ("4", 0.5), ("5", 0.1)):
            count = sum(r.boxes[0].category == category for r in chosen)
            assert abs(count - share * ratio) <= 1, (ratio, category, count)
    assert len({r.image_id for r in replayed(pool, project, ratio=100)}) == 100  # each image once


def test_a_fine_tune_holds_the_named_parts_and_counts_only_the_projects_own_lesions():
    held = schedule(TrainSettings(), "models/starter", freeze=["category-head"], classifier_min_lesions=50)
    assert held.frozen == ("roi_heads.box_head.", "roi_heads.box_predictor.cls_score.")
    assert (held.classifier_min_lesions, held.weights) == (50, "models/starter")
    with pytest.raises(ValueError, match=r"cannot freeze \['backbone'\]: the parts a fine-tune can hold are"):
        schedule(TrainSettings(), "models/starter", freeze=["backbone"])
    project = [record("p0", "4", "5", split="train"), record("p1", "3", split="train"), record("normal", split="train")]
    assert own_lesions(project + replayed(POOL, project, ratio=2)) == 3  # the six replayed lesions not counted


def _model_dir(path, settings):
    path.mkdir()
    (path / WEIGHTS).write_bytes(b"")
    (path / CONFIG).write_text("")
    (path / META).write_text(ModelInfo(classes=["2", "3", "4", "5"], created_at="now", settings=settings).to_json())
    return str(path)


def test_a_fine_tune_rotates_its_training_boxes_as_its_parent_did(tmp_path):
    ellipse_parent = _model_dir(tmp_path / "ellipse", {"box_rotation": "ellipse"})
    assert schedule(TrainSettings(), ellipse_parent).box_rotation == "ellipse"  # the job's default is corners
    before_item_56 = _model_dir(tmp_path / "older", {"base_lr": 0.01})  # trained before the setting existed
    assert schedule(TrainSettings(box_rotation="ellipse"), before_item_56).box_rotation == "corners"
    # no model directory to ask (a checkpoint, a missing path): the settings' own
    assert schedule(TrainSettings(box_rotation="ellipse"), str(tmp_path / "none")).box_rotation == "ellipse"
