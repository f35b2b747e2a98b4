"""model.roi_pooling: box features pooled at the boxes' exact corners under bf16."""

import json

import torch

from model.roi_pooling import pool_at_exact_corners


def test_bf16_features_are_pooled_at_the_exact_corners_not_at_rounded_ones():
    from detectron2.layers import ROIAlign  # after model (model.compat)

    torch.manual_seed(0)
    features = torch.rand(1, 2, 200, 300)
    rois = torch.tensor([[0.0, 201.3, 17.7, 253.9, 110.2]])  # bf16 rounds 201.3 to 201, 253.9 to 254
    exact = ROIAlign((7, 7), 0.5, 0)(features, rois)
    rounded, fixed = ROIAlign((7, 7), 0.5, 0), ROIAlign((7, 7), 0.5, 0)
    holder = torch.nn.Sequential(fixed)
    assert pool_at_exact_corners(holder) == 1 and pool_at_exact_corners(torch.nn.Linear(1, 1)) == 0
    low = features.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as the bf16 predictor and trainer run it
        as_detectron2, ours = rounded(low, rois), fixed(low, rois)
    assert ours.dtype == torch.bfloat16
    ours_error = (ours.float() - exact).abs().mean()
    theirs_error = (as_detectron2.float() - exact).abs().mean()
    assert ours_error < theirs_error / 2  # what is left is the features' own rounding


def test_a_model_trained_so_predicts_so_and_its_fine_tunes_pool_so(tmp_path):
    from model import modeldir
    from model.config import TrainSettings
    from model.fine_tuning import schedule

    folder = tmp_path / "parent"
    folder.mkdir()
    (folder / modeldir.WEIGHTS).write_bytes(b"")
    (folder / modeldir.CONFIG).write_text("MODEL: {}\n")
    meta = {"classes": ["2", "3"], "created_at": "now", "settings": {"roi_align_fp32": True}}
    (folder / modeldir.META).write_text(json.dumps(meta))
    assert schedule(TrainSettings(), str(folder)).roi_align_fp32 is True
    (folder / modeldir.META).write_text(json.dumps(dict(meta, settings={})))  # trained before the setting
    assert schedule(TrainSettings(roi_align_fp32=True), str(folder)).roi_align_fp32 is False
    assert schedule(TrainSettings(roi_align_fp32=True), str(tmp_path / "none")).roi_align_fp32 is True
