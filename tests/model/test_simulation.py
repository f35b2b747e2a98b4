"""The labelling-loop simulation: 2 rounds on real images with tiny settings (bookkeeping)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from model import modeldir
from model.records import Box, Detection
from model.simulation import pick_next
from tests.conftest import LIGHT_BOX_HEAD, TINY_PROPOSALS


def test_uncertain_order_picks_least_confident_pre_annotations():
    def detection(*scores):
        return Detection(tuple(Box(0, 0, 10, 10, "3", s) for s in scores), 20, 20)

    seen = [detection(0.95), detection(0.55, 0.9), detection(), detection(0.3), detection(0.97, 0.8)]
    # confidence at 0.5: 0.95, 0.55, 1.0 (nothing at all), 0.7 (1 - 0.3), 0.8
    assert pick_next(list(range(5)), 2, "uncertain", seen, threshold=0.5) == [1, 3]
    assert pick_next(list(range(5)), 2, "random") == [0, 1]
    with pytest.raises(ValueError):
        pick_next(list(range(5)), 2, "uncertain")


def test_uncertain_order_reads_what_the_display_shows_as_the_backend_scores_it():
    """Under top1-only one box is shown: its score is the task's (backend.detector.prediction)."""
    def detection(*scores):
        return Detection(tuple(Box(0, 0, 10, 10, "3", s) for s in scores), 20, 20)

    seen = [detection(0.9, 0.55), detection(0.3)]
    # top1-only: 0.9 and 0.3 (the low box is shown); threshold: 0.55 and 0.7 (none shown)
    assert pick_next(list(range(2)), 1, "uncertain", seen, 0.5, "top1-only") == [1]
    assert pick_next(list(range(2)), 1, "uncertain", seen, 0.5, "threshold") == [0]


def _simulate(out: Path, data: str, *options: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "model.cli", "simulate", "--data", data, "--holdout-splits", "fold2", "--out", str(out),
         "--round-size", "2", "--score-threshold", "0.3",
         "--base-config", "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml", "--image-size", "128",
         "--max-iter", "3", "--num-workers", "0", *options,
         "--extra", *LIGHT_BOX_HEAD, *TINY_PROPOSALS],
        capture_output=True, text=True, timeout=900, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "simulation.json").read_text())


def _gated_as_the_jobs_are(rows: list[dict], models: Path, first_served: str | None) -> None:
    """Each round's new version was fine-tuned from the version served before it and, at a
    tolerance of -1 (it must beat the served one by 1), refused wherever a served version could be
    compared on held-out images: then the served version stays."""
    served = first_served
    for row in rows:
        assert row["train_images"] + row["held_out_images"] == row["labelled_images"]
        candidate = models / row["candidate"]
        parent = modeldir.read_info(candidate).parent
        assert (Path(parent).name if parent else None) == served
        compared = served is not None and row["held_out_images"] > 0
        assert row["promoted"] is not compared and bool(row["refused"]) is compared
        if compared:
            assert "held-out tasks is below the served version's" in row["refused"]
        served = row["model"] if not compared else served
        assert row["model"] == (served if compared else row["candidate"])


@pytest.mark.slow
def test_two_rounds_grow_the_training_set_and_chain_versions(tmp_path, busbra_dir, breast_dir):
    out = tmp_path / "sim"
    result = _simulate(out, f"busbra:{busbra_dir}", "--initial", "2", "--rounds", "2", "--order", "uncertain",
                       "--cost-draw", "10", "--cost-verify", "2", "--fine-tune-lr", "0.003",
                       "--replay-data", f"breast:{breast_dir}", "--replay-ratio", "0.5",
                       "--holdout-fraction", "0.1", "--promote-tolerance", "-1")
    rows = result["rounds"]
    assert result["settings"]["box_voting_iou"] == 0.5  # the expert sees the places the backend serves
    assert [r["labelled_images"] for r in rows] == [2, 4, 6]          # 6 pool images, fold2 held out
    # two of the six patients hash into the held-out tenth (model.promotion.held_out): none trains
    assert rows[-1]["held_out_images"] == 2 and rows[-1]["train_images"] == 4
    assert [r["batch_images"] for r in rows] == [0, 2, 2]
    _gated_as_the_jobs_are(rows, out / "models", None)
    assert not all(r["promoted"] for r in rows)  # the gate refused at least once
    assert result["starter"] is None  # round 0 trained from nothing
    for row in rows[1:]:
        # the baseline draws every lesion by hand: one per image in BUS-BRA
        assert row["baseline_corrections_per_image"] == 1.0
        assert row["corrections_per_image"] >= 0 and 0 <= row["acceptance_rate"] <= 1
        assert 0 <= row["ap50"] <= 1 or row["ap50"] == -1
        assert row["test_effort_ratio"] > 0 and 0 <= row["category_accuracy"] <= 1  # the served version's
        # expert-seconds at the costs asked for: one lesion per image drawn at 10 s by hand
        assert row["by_hand_seconds_per_image"] == 10.0 and row["seconds_per_image"] >= 0
        assert row["ratio"] == pytest.approx(row["seconds_per_image"] / 10.0)
        assert row["ratio_draw_7s"] >= row["ratio"] >= row["ratio_draw_35s"]  # both ends of the draw cost
    assert result["settings"]["costs"]["draw"] == 10.0 and result["settings"]["costs"]["verify"] == 2.0
    assert rows[0]["seconds_per_image"] is None  # nothing was pre-annotated before round 1
    models = out / "models"
    assert modeldir.read_info(models / "round-0").parent is None
    # each fine-tune replays half an image of the other dataset per image it trains on (round 0
    # trained from nothing: no replay); its 4A/4B read as 4, the labelled images' label set
    assert rows[0]["replay_images"] == 0
    assert [r["replay_images"] for r in rows[1:]] == [round(0.5 * r["train_images"]) for r in rows[1:]]
    assert modeldir.read_info(models / "round-2").data["images"] == 4 + rows[-1]["replay_images"]
    assert modeldir.read_info(models / "round-2").data["splits"]["replay"] == rows[-1]["replay_images"]
    assert modeldir.read_info(models / "round-2").classes == ["2", "3", "4", "5"]
    # round 0 trained from nothing on the full schedule's rate; each fine-tune on the jobs' (here, as asked)
    assert modeldir.read_info(models / "round-0").settings["base_lr"] == 0.02
    assert {modeldir.read_info(models / f"round-{n}").settings["base_lr"] for n in (1, 2)} == {0.003}
    assert {"corrections.png", "ap50.png", "simulation.md"} <= {p.name for p in out.iterdir()}
    table = (out / "simulation.md").read_text()
    assert (f"Each fine-tune: 3 iterations at learning rate 0.003, replaying 0.5 image(s) of breast:{breast_dir} "
            "(4 images) per labelled one; 10% of the labelled images held out; a new version served unless its "
            "ap50_lesion on them is more than -1 below the served version's") in table
    assert "'draw': 10.0" in table and "ratio_draw_35s" in table and "seconds_per_image" in table
    assert "| promoted |" in table and "test_effort_ratio" in table


@pytest.mark.slow
def test_a_starter_is_served_until_a_version_passes_the_gate(tmp_path, tiny_model, busbra_dir):
    out = tmp_path / "sim"
    result = _simulate(out, f"busbra:{busbra_dir}", "--initial", "4", "--rounds", "1", "--weights", str(tiny_model),
                       "--holdout-fraction", "0.1", "--promote-tolerance", "-1")
    rows = result["rounds"]
    # the starter is what a project serves before its first job: on the test set, and the first
    # version's yardstick
    assert 0 <= result["starter"]["ap50_lesion"] <= 1 and result["starter"]["test_effort_ratio"] > 0
    _gated_as_the_jobs_are(rows, out / "models", tiny_model.name)
    assert "The starter on the test set: ap50" in (out / "simulation.md").read_text()



def test_the_test_sets_effort_is_priced_at_the_costs_asked_for(busbra_dir, monkeypatch):
    """The served version's test-set ratio (what "falling round by round" reads) uses the same
    cost model as the rounds' batches. The model is a stand-in: one far-off box on every image."""
    from model import datasets, simulation
    from model.evaluation.effort import ActionCosts

    class FarOff:
        classes = ["2", "3", "4", "5"]

        def __call__(self, paths):
            return [Detection((Box(0, 0, 5, 5, "3", 0.9),), 400, 300) for _ in paths]

    monkeypatch.setattr(simulation, "_predictor", lambda model_dir, settings: FarOff())
    holdout = datasets.load(f"busbra:{busbra_dir}")[:3]
    ratios = {d: simulation._tested(Path(f"v-{d}"), holdout, simulation.SimulationSettings(
        costs=ActionCosts(draw=d), display="top1-only"), {})["test_effort_ratio"] for d in (7.0, 35.0)}
    # each image: verify 1.6 + delete 2.9 + draw, against draw by hand
    assert ratios == {d: pytest.approx((1.6 + 2.9 + d) / d) for d in (7.0, 35.0)}
