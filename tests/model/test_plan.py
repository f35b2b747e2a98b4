"""A training job sized to this machine: probe iterations measure the speed, the schedule is capped
to TRAIN_TIME_BUDGET, and the estimate is recorded (slow: trains a few real iterations)."""

from dataclasses import replace

import pytest

from backend.settings import Settings
from backend.training import plan
from model import datasets

pytestmark = pytest.mark.slow


def test_probe_caps_the_schedule_to_the_time_budget(busbra_dir):
    records = datasets.load(f"busbra:{busbra_dir}")
    settings = Settings(train_base_config="COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml", train_image_size=128,
                        train_max_iter=100_000, train_time_budget=60, bf16="false")
    chosen, facts = plan(settings, records, "", fine_tune=False)
    rate = facts["seconds_per_iter_probe"]
    assert 0 < rate < 60
    assert facts["iterations_wanted"] == 100_000 and facts["capped_by_time_budget"] == 60
    assert facts["schedule"] == "first training" and facts["base_lr"] == chosen.base_lr
    assert chosen.max_iter == facts["max_iter"] and abs(facts["max_iter"] - 60 / rate) <= 1  # rate is rounded
    assert facts["estimated_seconds"] == pytest.approx(60, abs=rate + 1)
    unlimited, facts = plan(replace(settings, train_time_budget=0, train_max_iter=10), records, "", fine_tune=False)
    assert unlimited.max_iter == facts["max_iter"] == 10 and "capped_by_time_budget" not in facts


def test_train_probe_times_the_settings_and_trains_nothing(busbra_dir, tmp_path, capsys):
    from model.cli import main

    out = tmp_path / "model"
    assert main(["train", "--data", f"busbra:{busbra_dir}", "--out", str(out), "--probe",
                 "--base-config", "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml", "--image-size", "128",
                 "--batch-size", "2", "--num-workers", "1"]) == 0
    seconds = float(capsys.readouterr().out.strip().splitlines()[-1])  # scripts read the last line
    assert 0 < seconds < 60
    assert not out.exists()
