"""In-domain pretraining: a crop classifier whose trunk then starts the detector (slow: ~1 minute)."""

import json

import pytest
import torch

from model import config, datasets
from model.config import TrainSettings
from model.io import DataError
from model.pretrain import PretrainSettings, pretrain
from model.train import train

pytestmark = pytest.mark.slow
R50 = "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"


def test_pretrained_trunk_starts_the_detector_with_frozen_batch_norm(tmp_path, busbra_dir):
    records = datasets.load(f"busbra:{busbra_dir}")
    # with the outline task too: detectron2's trunk hands its res5 maps to the decoder
    settings = PretrainSettings(base_config=R50, crop_size=32, epochs=2, batch_size=4, bf16=False,
                                outline_loss=1.0)
    trunk_dir = pretrain(records[:6], tmp_path / "trunk", settings, holdout=records[6:])
    report = json.loads((trunk_dir / "pretrain.json").read_text())
    assert [row["epoch"] for row in report["history"]] == [1, 2] and report["settings"]["outline_loss"] == 1.0
    assert report["classes"][-1] == "background" and report["train_crops"] == 6
    assert report["holdout"]["crops"] == 2 and 0 <= report["holdout"]["birads_accuracy"] <= 1
    trunk = torch.load(trunk_dir / "trunk.pth")["model"]
    assert trunk and all(k.startswith("backbone.bottom_up.") for k in trunk)
    assert not any(k.endswith("num_batches_tracked") for k in trunk)

    detector_dir = train(records, tmp_path / "detector", TrainSettings(
        base_config=R50, weights=str(trunk_dir), image_size=128, max_size=192, max_iter=2,
        num_workers=0, warmup_iters=1))
    detector = torch.load(detector_dir / "model_final.pth")["model"]
    # The frozen stem and res2 are the trunk's, and so are every stage's batch-norm statistics.
    for key in ("backbone.bottom_up.stem.conv1.weight", "backbone.bottom_up.res2.0.conv1.weight",
                "backbone.bottom_up.res4.0.conv1.norm.running_mean",
                "backbone.bottom_up.res5.2.conv3.norm.running_var"):
        torch.testing.assert_close(detector[key], trunk[key])
    config = (detector_dir / "config.yaml").read_text()
    assert "NORM: FrozenBN" in config and "MAX_SIZE_TRAIN: 192" in config

    with pytest.raises(DataError, match="pretrained for"):
        train(records, tmp_path / "r101", TrainSettings(weights=str(trunk_dir), max_iter=1))


def test_pretrain_probe_times_an_epoch_and_trains_nothing(busbra_dir, tmp_path, capsys):
    from model.cli import main

    out = tmp_path / "trunk"
    assert main(["pretrain", "--data", f"busbra:{busbra_dir}", "--out", str(out), "--probe",
                 "--crop-size", "32", "--batch-size", "2"]) == 0
    seconds = float(capsys.readouterr().out.strip().splitlines()[-1])  # scripts read the last line
    assert 0 < seconds < 600
    assert not out.exists()


def test_bf16_on_a_cpu_without_it_trains_and_records_float32(tmp_path, busbra_dir, monkeypatch, caplog):
    # an AVX2-only CPU: bf16 (the pretraining's default, the recipe's --bf16) would be emulated
    monkeypatch.setattr(config, "cpu_supports_bf16", lambda: False)
    records = datasets.load(f"busbra:{busbra_dir}")
    trunk_dir = pretrain(records[:6], tmp_path / "trunk", PretrainSettings(
        base_config=R50, crop_size=32, epochs=1, batch_size=4, bf16=True))
    assert json.loads((trunk_dir / "pretrain.json").read_text())["settings"]["bf16"] is False
    detector_dir = train(records[:4], tmp_path / "detector", TrainSettings(
        base_config=R50, weights=str(trunk_dir), image_size=128, max_size=192, max_iter=2, num_workers=0,
        warmup_iters=1, bf16=True, device="cpu"))
    assert json.loads((detector_dir / "model.json").read_text())["settings"]["bf16"] is False  # what ran
    assert caplog.text.count("no native bfloat16") == 2  # said once per training
