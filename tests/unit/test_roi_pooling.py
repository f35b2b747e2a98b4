"""model.roi_pooling: box features pooled at the boxes' exact corners under bf16, in channel parts."""

import functools
import itertools
import json

import pytest
import torch
from torchvision.ops import roi_align

from model.roi_pooling import pool_boxes


def test_bf16_features_are_pooled_at_the_exact_corners_not_at_rounded_ones():
    from detectron2.layers import ROIAlign  # after model (model.compat)

    torch.manual_seed(0)
    features = torch.rand(1, 2, 200, 300)
    rois = torch.tensor([[0.0, 201.3, 17.7, 253.9, 110.2]])  # bf16 rounds 201.3 to 201, 253.9 to 254
    exact = ROIAlign((7, 7), 0.5, 0)(features, rois)
    rounded, fixed = ROIAlign((7, 7), 0.5, 0), ROIAlign((7, 7), 0.5, 0)
    holder = torch.nn.Sequential(fixed)
    assert pool_boxes(holder, exact_corners=True) == 1 and pool_boxes(torch.nn.Linear(1, 1)) == 0
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


def _float32_pooling(features: torch.Tensor, rois: torch.Tensor, **pooling) -> torch.Tensor:
    return roi_align(features.float(), rois.float(), sampling_ratio=0, aligned=True, **pooling).to(features.dtype)


def _pooled_and_gradient(pooler, features: torch.Tensor, rois: torch.Tensor, bf16: bool):
    features = (features.bfloat16() if bf16 else features).detach().requires_grad_(True)  # as the FPN's
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        pooled = pooler(features, rois)
    # a gradient as varied as the box head's: one weight per output element
    (pooled.float() * torch.linspace(-1, 1, pooled.numel()).view_as(pooled)).sum().backward()
    return pooled, features.grad


def _level() -> tuple[torch.Tensor, torch.Tensor]:
    """An FPN level as training sees it: 4 images, 256 channels, boxes of every size, some over the
    edge or outside the image; in channels_last like the bf16 trainer's features."""
    torch.manual_seed(0)
    features = torch.randn(4, 256, 40, 72).contiguous(memory_format=torch.channels_last)
    corners = torch.rand(300, 2) * torch.tensor([300.0, 170.0]) - 10
    sizes = 4 + torch.rand(300, 2) * 120
    return features, torch.cat([torch.randint(0, 4, (300, 1)).float(), corners, corners + sizes], dim=1)


def test_the_backward_split_over_the_cores_gives_the_one_kernel_s_gradient_to_the_bit():
    from detectron2.layers import ROIAlign  # after model (model.compat)

    features, rois = _level()
    threads = torch.get_num_threads()
    torch.set_num_threads(3)  # three parts of uneven size, whatever this machine's cores
    features_type = {False: torch.float32, True: torch.bfloat16}
    try:
        for bf16, exact in itertools.product((False, True), (False, True)):
            stock, ours = ROIAlign((7, 7), 0.25, 0, aligned=True), ROIAlign((7, 7), 0.25, 0, aligned=True)
            if exact:  # as pooling at the exact corners was written before (item 68)
                stock = functools.partial(_float32_pooling, output_size=(7, 7), spatial_scale=0.25)
            assert pool_boxes(torch.nn.Sequential(ours), exact_corners=exact) == 1
            expected, expected_grad = _pooled_and_gradient(stock, features, rois, bf16)
            pooled, grad = _pooled_and_gradient(ours, features, rois, bf16)
            assert pooled.dtype == expected.dtype == grad.dtype == expected_grad.dtype == features_type[bf16]
            assert torch.equal(pooled, expected)
            assert expected_grad.abs().sum() > 0 and torch.equal(grad, expected_grad)
    finally:
        torch.set_num_threads(threads)


def test_prediction_and_other_types_pool_as_detectron2_does():
    from detectron2.layers import ROIAlign

    features, rois = _level()
    stock, ours = ROIAlign(7, 0.25, 0, aligned=True), ROIAlign(7, 0.25, 0, aligned=True)  # an int size too
    pool_boxes(torch.nn.Sequential(ours))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):  # the bf16 predictor
        assert torch.equal(ours(features.bfloat16(), rois), stock(features.bfloat16(), rois))
    with torch.no_grad():  # float64 stays float64, as torchvision's autocast leaves it
        assert torch.equal(ours(features.double(), rois.double()), stock(features.double(), rois.double()))
    with pytest.raises(AssertionError):
        ours(features, rois[:, 1:])  # boxes without their image index, refused like detectron2's
