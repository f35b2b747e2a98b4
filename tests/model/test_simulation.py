"""The labelling-loop simulation: 2 rounds on real images with tiny settings (bookkeeping)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from model import modeldir
from model.records import Box, Detection
from model.simulation import pick_next


def test_uncertain_order_picks_least_confident_pre_annotations():
    def detection(*scores):
        return Detection(tuple(Box(0, 0, 10, 10, "3", s) for s in scores), 20, 20)

    seen = [detection(0.95), detection(0.55, 0.9), detection(), detection(0.3), detection(0.97, 0.8)]
    # confidence at 0.5: 0.95, 0.55, 1.0 (nothing at all), 0.7 (1 - 0.3), 0.8
    assert pick_next(list(range(5)), 2, "uncertain", seen, threshold=0.5) == [1, 3]
    assert pick_next(list(range(5)), 2, "random") == [0, 1]
    with pytest.raises(ValueError):
        pick_next(list(range(5)), 2, "uncertain")


@pytest.mark.slow
def test_two_rounds_grow_the_training_set_and_chain_versions(tmp_path, busbra_dir, breast_dir):
    repo = Path(__file__).parents[2]
    out = tmp_path / "sim"
    done = subprocess.run(
        [sys.executable, "-m", "model.cli", "simulate", "--data", f"busbra:{busbra_dir}", "--holdout-splits",
         "fold2", "--out", str(out), "--initial", "2", "--round-size", "2", "--rounds", "2", "--order",
         "uncertain", "--score-threshold", "0.3", "--base-config", "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml",
         "--image-size", "128", "--max-iter", "3", "--num-workers", "0", "--cost-draw", "10", "--cost-verify", "2",
         "--fine-tune-lr", "0.003", "--replay-data", f"breast:{breast_dir}", "--replay-ratio", "0.5"],
        capture_output=True, text=True, timeout=900, cwd=repo)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "simulation.json").read_text())
    rows = result["rounds"]
    assert result["settings"]["box_voting_iou"] == 0.5  # the expert sees the places the backend serves
    assert [r["train_images"] for r in rows] == [2, 4, 6]          # 6 pool images, fold2 held out
    assert [r["batch_images"] for r in rows] == [0, 2, 2]
    for row in rows[1:]:
        # the baseline draws every lesion by hand: one per image in BUS-BRA
        assert row["baseline_corrections_per_image"] == 1.0
        assert row["corrections_per_image"] >= 0 and 0 <= row["acceptance_rate"] <= 1
        assert 0 <= row["ap50"] <= 1 or row["ap50"] == -1
        # expert-seconds at the costs asked for: one lesion per image drawn at 10 s by hand
        assert row["by_hand_seconds_per_image"] == 10.0 and row["seconds_per_image"] >= 0
        assert row["ratio"] == pytest.approx(row["seconds_per_image"] / 10.0)
        assert row["ratio_draw_7s"] >= row["ratio"] >= row["ratio_draw_35s"]  # both ends of the draw cost
    assert result["settings"]["costs"]["draw"] == 10.0 and result["settings"]["costs"]["verify"] == 2.0
    assert rows[0]["seconds_per_image"] is None  # nothing was pre-annotated before round 1
    models = out / "models"
    assert modeldir.read_info(models / "round-0").parent is None
    assert Path(modeldir.read_info(models / "round-2").parent).name == "round-1"   # fine-tuned chain
    # each fine-tune replays half an image of the other dataset per labelled one (round 0 trained from
    # nothing: no replay); its 4A/4B read as 4, the labelled images' label set
    assert [r["replay_images"] for r in rows] == [0, 2, 3]
    assert modeldir.read_info(models / "round-2").data["images"] == 6 + 3
    assert modeldir.read_info(models / "round-2").data["splits"]["replay"] == 3
    assert modeldir.read_info(models / "round-2").classes == ["2", "3", "4", "5"]
    # round 0 trained from nothing on the full schedule's rate; each fine-tune on the jobs' (here, as asked)
    assert modeldir.read_info(models / "round-0").settings["base_lr"] == 0.02
    assert {modeldir.read_info(models / f"round-{n}").settings["base_lr"] for n in (1, 2)} == {0.003}
    assert {"corrections.png", "ap50.png", "simulation.md"} <= {p.name for p in out.iterdir()}
    table = (out / "simulation.md").read_text()
    assert (f"Each fine-tune: 3 iterations at learning rate 0.003, replaying 0.5 image(s) of breast:{breast_dir} "
            "(4 images) per labelled one") in table
    assert "'draw': 10.0" in table and "ratio_draw_35s" in table and "seconds_per_image" in table
