"""The box classifier: trained into a model directory, re-naming the predictor's boxes, and
fine-tuned with the detector when a model version is trained from one that has it."""

import json
import shutil
from dataclasses import replace

import cv2
import pytest

from model import datasets
from model.box_classifier import BoxClassifierSettings, train_box_classifier
from model.config import TrainSettings
from model.fine_tuning import REPLAY_SPLIT, schedule
from model.io import DataError, read_image
from model.modeldir import read_info
from model.predict import Predictor
from model.records import BOX_VOTING_IOU
from model.train import train
from tests.conftest import TINY_BOX_CLASSIFIER

pytestmark = pytest.mark.slow
SETTINGS = BoxClassifierSettings(**TINY_BOX_CLASSIFIER)  # classified_tiny_model's (tests/conftest.py)


@pytest.fixture(scope="module")
def records(busbra_dir):
    return datasets.load(f"busbra:{busbra_dir}")


def test_box_classifier_is_written_into_the_model_directory(tmp_path, classified_tiny_model, records):
    meta = json.loads((classified_tiny_model / "box_classifier" / "classifier.json").read_text())
    assert meta["classes"] == [*read_info(classified_tiny_model).classes, "background"]
    assert [row["epoch"] for row in meta["history"]] == [1, 2] and meta["fine_tuned_from"] is None
    assert meta["holdout"]["crops"] == sum(len(r.boxes) for r in records[6:])
    assert meta["settings"]["blend"] == 1.0
    model = shutil.copytree(classified_tiny_model, tmp_path / "model")  # the shared one stays whole
    with pytest.raises(DataError, match="not an earlier output"):  # a second one never overwrites
        (model / "box_classifier" / ".birads-output").unlink()
        train_box_classifier(records, model, ["2", "3"], SETTINGS)


def test_predictor_renames_boxes_with_the_classifier(classified_tiny_model, records):
    images = [r.path for r in records]
    # read by argmax: the classifier's own choice (the served median reading is tested in test_training)
    plain = Predictor(classified_tiny_model, score_threshold=0.0, bf16=False, box_classifier=False,
                      category_reading="argmax")
    named = Predictor(classified_tiny_model, score_threshold=0.0, bf16=False, category_reading="argmax",
                      malignancy_reading="pathology")  # the pathology head's own, to compare with it
    assert plain.box_classifier is None and named.box_classifier is not None
    checked = 0
    for path, before, after in zip(images, plain(images), named(images)):
        # the same boxes, in the same order, with the detector's scores: only the names change
        assert [(b.x0, b.y0, b.x1, b.y1, b.score) for b in after.boxes] == \
            [(b.x0, b.y0, b.x1, b.y1, b.score) for b in before.boxes]
        grey = cv2.cvtColor(read_image(path), cv2.COLOR_RGB2GRAY)
        opinions, malignancy = named.box_classifier.opinions(grey, after.boxes)
        assert list(after.malignancy) == pytest.approx(malignancy) and not before.malignancy
        assert all(0.0 <= p <= 1.0 for p in malignancy)
        for box, scores, detector, opinion in zip(after.boxes, after.class_scores, before.class_scores, opinions):
            assert sum(scores.values()) == pytest.approx(sum(detector.values()), abs=1e-5)
            lesion = {c: opinion[c] for c in scores}
            assert box.category == max(lesion, key=lesion.get)  # blend 1.0: the classifier names it
            checked += 1
    assert checked > 0


def test_the_mean_reading_sets_each_boxs_categories_beside_its_pathology_head(classified_tiny_model, records):
    from model.malignancy_reading import category_mass

    images = [r.path for r in records[:3]]
    # voting as served: each box's P(malignant) is read where the detector put it, then the boxes move
    alone = Predictor(classified_tiny_model, score_threshold=0.0, bf16=False, box_voting_iou=BOX_VOTING_IOU,
                      malignancy_reading="pathology")(images)
    beside = Predictor(classified_tiny_model, score_threshold=0.0, bf16=False, box_voting_iou=BOX_VOTING_IOU,
                       malignancy_reading="mean")(images)
    checked = 0
    for served, mean in zip(alone, beside):  # the same boxes and names: only P(malignant) is read otherwise
        assert mean.boxes == served.boxes and mean.class_scores == served.class_scores
        for number, (pathology, both) in enumerate(zip(served.malignancy, mean.malignancy)):
            assert both == pytest.approx((pathology + category_mass(served, number)) / 2)
            checked += 1
    assert checked > 0
    with pytest.raises(ValueError, match="pathology"):
        Predictor(classified_tiny_model, malignancy_reading="both")


def test_birads_predict_prints_each_boxs_malignancy_from_the_pathology_head(classified_tiny_model, records, capsys):
    from model.cli import main

    image = records[0].path
    assert main(["predict", "--model", str(classified_tiny_model), "--score-threshold", "0", "--no-bf16", image]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    named = Predictor(classified_tiny_model, score_threshold=0.0, bf16=False,  # votes as `birads` does
                      box_voting_iou=BOX_VOTING_IOU)([image])[0]
    assert line["boxes"] and [b["malignancy"] for b in line["boxes"]] == pytest.approx(named.malignancy, abs=1e-4)
    assert main(["predict", "--model", str(classified_tiny_model), "--score-threshold", "0", "--no-bf16",
                 "--malignancy-reading", "pathology", image]) == 0
    head = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    alone = Predictor(classified_tiny_model, score_threshold=0.0, bf16=False, box_voting_iou=BOX_VOTING_IOU,
                      malignancy_reading="pathology")([image])[0]
    assert [b["malignancy"] for b in head["boxes"]] == pytest.approx(alone.malignancy, abs=1e-4)
    assert main(["predict", "--model", str(classified_tiny_model), "--score-threshold", "0", "--no-bf16",
                 "--no-box-classifier", image]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["boxes"] and all("malignancy" not in b for b in line["boxes"])  # the detector alone


def test_a_fine_tuned_version_fine_tunes_its_parents_classifier(tmp_path, classified_tiny_model, records):
    reports = []
    child = train(records, tmp_path / "child", TrainSettings(
        base_config="COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml", weights=str(classified_tiny_model),
        image_size=0, max_iter=1, num_workers=0, warmup_iters=1), progress=reports.append)
    assert reports[-1]["stage"] == "box classifier"  # the job's status page shows it
    assert reports[-1]["iteration"] == reports[-1]["max_iter"] == 1 and reports[-1]["eta_seconds"] == 0
    meta = json.loads((child / "box_classifier" / "classifier.json").read_text())
    assert meta["fine_tuned_from"] == str(classified_tiny_model)
    assert [row["epoch"] for row in meta["history"]] == [1]          # the parent's fine_tune_epochs
    assert meta["settings"] == json.loads(
        (classified_tiny_model / "box_classifier" / "classifier.json").read_text())["settings"]
    assert Predictor(child, bf16=False).box_classifier is not None


def test_a_project_with_few_lesions_of_its_own_carries_its_parents_classifier(tmp_path, classified_tiny_model, records):
    """FINE_TUNE_CLASSIFIER_MIN_LESIONS: below it the new version's classifier is its parent's, byte
    for byte; replayed images do not count towards it."""
    tiny = dict(base_config="COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml", image_size=0, max_iter=1,
                num_workers=0, warmup_iters=1)
    lesions = sum(len(r.boxes) for r in records)
    project = records[:2] + [replace(r, split=REPLAY_SPLIT) for r in records[2:]]
    reports = []
    child = train(project, tmp_path / "child", schedule(
        TrainSettings(**tiny), str(classified_tiny_model), classifier_min_lesions=3), progress=reports.append)
    assert read_info(child).training["box_classifier"] == "carried from the parent"
    assert reports[-1]["stage"] == "training"  # no classifier epochs
    for name in ("weights.pth", "classifier.json"):
        assert (child / "box_classifier" / name).read_bytes() == \
            (classified_tiny_model / "box_classifier" / name).read_bytes()
    retrained = train(records, tmp_path / "retrained", schedule(
        TrainSettings(**tiny), str(classified_tiny_model), classifier_min_lesions=lesions))
    assert read_info(retrained).training["box_classifier"] == "retrained"
    meta = json.loads((retrained / "box_classifier" / "classifier.json").read_text())
    assert meta["fine_tuned_from"] == str(classified_tiny_model)


def test_a_model_of_other_classes_trains_its_own_classifier_afresh(tmp_path, classified_tiny_model, records):
    second = train(records, tmp_path / "no4", TrainSettings(
        base_config="COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml", weights=str(classified_tiny_model),
        without_birads_4=True, image_size=0, max_iter=1, num_workers=0, warmup_iters=1))
    meta = json.loads((second / "box_classifier" / "classifier.json").read_text())
    assert meta["classes"] == ["2", "3", "5", "background"] and meta["fine_tuned_from"] is None
    assert len(meta["history"]) == SETTINGS.epochs and meta["train_boxes"] == 6  # the BI-RADS 4 images left out


def test_a_fresh_classifier_starts_from_its_seed_whatever_was_drawn_before():
    import torch

    from model.box_classifier import seeded

    first = seeded(5, SETTINGS, "cpu").state_dict()
    torch.rand(1000)  # a previous fold's training moves the global generator on
    again = seeded(5, SETTINGS, "cpu").state_dict()
    other = seeded(5, BoxClassifierSettings(seed=SETTINGS.seed + 1), "cpu").state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["trunk.conv1.weight"], other["trunk.conv1.weight"])


def test_misplaced_background_crops_sit_beside_a_lesion_and_miss_every_one(records):
    from model.pretrain import CropSampler, crop_classes
    from model.records import Box

    classes = crop_classes(records[:6])
    plain = CropSampler(records[:6], classes, replace(SETTINGS, misplaced_share=0.0), train=True)
    misplaced = CropSampler(records[:6], classes, replace(SETTINGS, misplaced_share=1.0), train=True)
    background = len(classes) - 1
    crops = [c for c in misplaced.epoch() if c.category == background]
    assert crops and len(crops) <= len(misplaced.lesions) * SETTINGS.background_per_lesion
    for crop in crops:
        box = Box(*crop.box, category="background")
        lesions = [Box(*c.box, category="lesion") for c in misplaced.lesions if c.image == crop.image]
        assert all(box.iou(lesion) < 0.3 for lesion in lesions) and crop.malignant == -1.0
        # beside one of them: its centre within 1.2 lesion sizes of that lesion's centre
        assert any(abs((box.x0 + box.x1) - (near.x0 + near.x1)) / 2 <= 1.2 * near.width + 1e-6 and
                   abs((box.y0 + box.y1) - (near.y0 + near.y1)) / 2 <= 1.2 * near.height + 1e-6
                   for near in lesions)
    # the default draws its background crops away from lesions, as the trunk's pretraining always has
    for crop in (c for c in plain.epoch() if c.category == background):
        assert all(_covered(crop.box, c.box) < 0.1 for c in plain.lesions if c.image == crop.image)


def test_partial_background_crops_lie_inside_a_lesion_and_cover_only_part_of_it(records):
    """Item 60: with ``partial_share`` 1 every misplaced crop is a box inside a lesion whose IoU with
    it lies in PARTIAL_IOU, a miss by the evaluation's IoU 0.5, and under that with every lesion."""
    from model.pretrain import PARTIAL_IOU, CropSampler, crop_classes
    from model.records import Box

    classes = crop_classes(records[:6])
    settings = replace(SETTINGS, misplaced_share=1.0, partial_share=1.0, background_per_lesion=2.0)
    sampler = CropSampler(records[:6], classes, settings, train=True)
    crops = [c for c in sampler.epoch() if c.category == len(classes) - 1]
    assert len(crops) > len(sampler.lesions)  # most draws find a box
    low, high = PARTIAL_IOU
    for crop in crops:
        box = Box(*crop.box, category="background")
        lesions = [Box(*c.box, category="lesion") for c in sampler.lesions if c.image == crop.image]
        assert all(box.iou(lesion) <= high + 1e-6 for lesion in lesions) and crop.malignant == -1.0
        assert any(_covered(crop.box, lesion.box) > 0.999 and box.iou(Box(*lesion.box, category="lesion")) >= low - 1e-6
                   for lesion in sampler.lesions if lesion.image == crop.image)


def test_lesion_shaped_background_crops_take_a_lesions_shape_and_still_miss_every_lesion(records):
    """Item 51: plain background crops are squares unless ``lesion_shaped_background``; then each
    has some training lesion's height-to-width ratio (where the image leaves room for it)."""
    from model.pretrain import CropSampler, crop_classes

    classes = crop_classes(records[:6])
    background = len(classes) - 1
    settings = replace(SETTINGS, misplaced_share=0.0, background_per_lesion=2.0)
    squares = CropSampler(records[:6], classes, settings, train=True)
    shaped = CropSampler(records[:6], classes, replace(settings, lesion_shaped_background=True), train=True)

    def ratio(box) -> float:
        return (box[3] - box[1]) / (box[2] - box[0])

    assert all(ratio(c.box) == pytest.approx(1.0) for c in squares.epoch() if c.category == background)
    crops = [c for c in shaped.epoch() if c.category == background]
    lesion_ratios = [max(c.box[3] - c.box[1], 1.0) / max(c.box[2] - c.box[0], 1.0) for c in shaped.lesions]

    def fits(crop) -> bool:  # not clipped to its image's width or height
        height, width = shaped.images[crop.image].shape
        return crop.box[2] - crop.box[0] < width - 1e-6 and crop.box[3] - crop.box[1] < height - 1e-6

    unclipped = [c for c in crops if fits(c)]
    assert len(unclipped) > len(crops) / 2 and any(abs(ratio(c.box) - 1.0) > 0.1 for c in crops)
    assert all(any(ratio(c.box) == pytest.approx(r) for r in lesion_ratios) for c in unclipped)
    for crop in crops:
        h, w = shaped.images[crop.image].shape
        assert 0 <= crop.box[0] < crop.box[2] <= w and 0 <= crop.box[1] < crop.box[3] <= h
        assert all(_covered(crop.box, c.box) < 0.1 for c in shaped.lesions if c.image == crop.image)


def _covered(a, b) -> float:
    """The share of box ``a`` that box ``b`` covers."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return ix * iy / ((a[2] - a[0]) * (a[3] - a[1]))


def test_rescoring_ranks_boxes_by_the_classifiers_p_lesion_scores_kept(tmp_path, classified_tiny_model, records):
    model = tmp_path / "rescored"
    shutil.copytree(classified_tiny_model, model)
    shutil.rmtree(model / "box_classifier")
    train_box_classifier(records[:6], model, read_info(model).classes,
                         replace(SETTINGS, rescore=0.5, misplaced_share=0.5))
    images = [r.path for r in records]
    plain = Predictor(model, score_threshold=0.0, bf16=False, box_classifier=False)
    rescored = Predictor(model, score_threshold=0.0, bf16=False,
                         malignancy_reading="pathology")  # the head's own, to compare with it
    checked = 0
    for path, before, after in zip(images, plain(images), rescored(images)):
        # the same boxes, scores and order as the detector's: what a threshold shows is unchanged
        assert [(b.x0, b.y0, b.x1, b.y1, b.score) for b in before.boxes] == \
               [(b.x0, b.y0, b.x1, b.y1, b.score) for b in after.boxes]
        assert len(after.ranks) == len(after.boxes) and not before.ranks
        grey = cv2.cvtColor(read_image(path), cv2.COLOR_RGB2GRAY)
        opinions, malignancy = rescored.box_classifier.opinions(grey, after.boxes)
        assert list(after.malignancy) == pytest.approx(malignancy, abs=1e-6)
        for box, rank, opinion in zip(after.boxes, after.ranks, opinions):
            assert rank == pytest.approx((box.score * (1.0 - opinion["background"])) ** 0.5, rel=1e-4)
            checked += 1
        if after.boxes:  # the top box: the highest rank, not necessarily the highest score
            assert after.rank_of(after.top()) == max(after.ranks)
    assert checked > 0


def test_box_voting_moves_the_boxes_after_the_classifier_has_read_them(classified_tiny_model, records):
    """The classifier names, ranks and judges each box where the detector put it; then the vote
    moves it (docs/results.md item 18: read at the voted places, its rank picked other top boxes)."""
    images = [r.path for r in records]
    options = dict(score_threshold=0.0, bf16=False, merge_iou=None)  # the merge: the next test
    named = Predictor(classified_tiny_model, box_voting_iou=None, **options)(images)
    voted = Predictor(classified_tiny_model, box_voting_iou=0.5, **options)(images)
    places = Predictor(classified_tiny_model, box_voting_iou=0.5, box_classifier=False, **options)(images)

    def verdicts(detection):
        return ([(b.category, b.score) for b in detection.boxes], detection.class_scores,
                detection.malignancy, detection.ranks)

    def where(detection):
        return [(b.x0, b.y0, b.x1, b.y1) for b in detection.boxes]

    moved = 0
    for before, after, detector in zip(named, voted, places):
        assert verdicts(after) == verdicts(before)  # read at the detector's own places
        assert where(after) == where(detector)  # placed by the vote alone
        for old, new in zip(before.boxes, after.boxes):
            moved += old.iou(new) < 0.999
            assert new.iou(old) > 0.3  # every voter overlapped the box at IoU >= 0.5
    assert moved > 0


def test_boxes_voted_onto_one_lesion_merge_into_the_best_ranked_with_its_verdicts(classified_tiny_model, records):
    """The one-box-per-lesion merge runs on the detector's places, and again where the vote moved
    them: two boxes can converge onto one lesion's proposals (docs/results.md item 19)."""
    images = [r.path for r in records]
    options = dict(score_threshold=0.0, bf16=False, max_boxes=100, box_voting_iou=0.5)
    unmerged = Predictor(classified_tiny_model, merge_iou=None, **options)(images)
    merged = Predictor(classified_tiny_model, merge_iou=0.5, **options)(images)
    for every, shown in zip(unmerged, merged):
        boxes = shown.boxes
        assert all(a.iou(b) < 0.5 for i, a in enumerate(boxes) for b in boxes[i + 1:])
        assert len(shown.class_scores) == len(shown.malignancy) == len(boxes)
        assert len(shown.ranks) in (0, len(boxes))  # ranks only where the classifier rescores
        # each kept box is one of the detector's, with its verdicts; the classifier reads fewer crops
        # in one batch here, which moves its float32 sums in the last digits
        assert set(boxes) <= set(every.boxes)
        for box in boxes:
            assert (shown.rank_of(box), shown.malignancy_of(box)) == \
                pytest.approx((every.rank_of(box), every.malignancy_of(box)), rel=1e-4, abs=1e-9)
        assert shown.top() == every.top() or not every.boxes  # the best-ranked box always stays
