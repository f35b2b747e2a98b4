"""How the detector pools each box's features (detectron2's ``ROIAlign`` layers, replaced in place).

Training: torchvision's CPU kernel for RoIAlign's backward runs on one core; on a 2-core AMD EPYC
Zen 4 it and its autograd node took about 15 % of a training iteration (docs/results.md item 74). Every channel's gradient depends on that channel alone, so ``pool_boxes`` splits the
backward's channels over the cores, each part computed by the same kernel in the same order: the
gradients are bitwise those of one call, and a training run is the same run, faster.

Exact corners (``TrainSettings.roi_align_fp32``): under bfloat16 autocast the FPN's features are
bfloat16, and detectron2's ``ROIAlign`` casts the boxes to the features' type before pooling:
every proposal's corners are rounded to 8 significant bits (up to 1 px between 256 and 512 px, 2
px above) in training and in prediction, while the box head learns its offsets against the exact
proposals. With ``exact_corners`` the pooling runs in float32 at the exact corners. A model records
the setting (model.json); its predictor and its fine-tunes pool as it was trained. Off by default:
every kept model was trained without it (docs/results.md items 68 and 73).
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
from detectron2.layers import ROIAlign


def _in_channel_parts(compute: Callable[[slice], torch.Tensor], channels: int, on_cpu: bool) -> torch.Tensor:
    """``compute`` of every channel slice, in parts over this process's threads, concatenated in
    channel order. torchvision's kernels release the GIL; a pool per call, so a forked RQ
    work-horse never inherits one."""
    parts = min(torch.get_num_threads(), channels) if on_cpu else 1
    if parts <= 1:
        return compute(slice(0, channels))
    bounds = [channels * i // parts for i in range(parts + 1)]
    slices = [slice(a, b) for a, b in zip(bounds, bounds[1:])]
    with ThreadPoolExecutor(parts - 1) as pool:
        others = [pool.submit(compute, s) for s in slices[1:]]
        first = compute(slices[0])  # this thread computes one part while the pool computes the others
        return torch.cat([first, *(other.result() for other in others)], dim=1)


class _RoIAlign(torch.autograd.Function):
    """RoIAlign computed in float32, as torchvision's autocast runs it, returned in the features'
    type; forward and backward in channel parts (each channel's output and gradient depend on that
    channel alone)."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, rois: torch.Tensor, output_size: tuple[int, int],
                spatial_scale: float, sampling_ratio: int, aligned: bool) -> torch.Tensor:
        rois = rois.float()
        ctx.save_for_backward(rois)
        ctx.pooling = (features.shape, features.dtype, spatial_scale, tuple(output_size), sampling_ratio, aligned)
        features_f32 = features.float()

        def pool(channels: slice) -> torch.Tensor:
            return torch.ops.torchvision.roi_align(features_f32[:, channels], rois, spatial_scale, output_size[0],
                                                   output_size[1], sampling_ratio, aligned)

        return _in_channel_parts(pool, features.shape[1], features.device.type == "cpu").to(features.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (rois,) = ctx.saved_tensors
        shape, dtype, spatial_scale, output_size, sampling_ratio, aligned = ctx.pooling
        grad = grad.float()
        batch, channels, height, width = shape

        def gradient(part: slice) -> torch.Tensor:
            return torch.ops.torchvision._roi_align_backward(
                grad[:, part].contiguous(), rois, spatial_scale, output_size[0], output_size[1], batch,
                part.stop - part.start, height, width, sampling_ratio, aligned)

        grad_features = _in_channel_parts(gradient, channels, grad.device.type == "cpu")
        return grad_features.to(dtype), None, None, None, None, None


def _pool(self: ROIAlign, features: torch.Tensor, rois: torch.Tensor, exact_corners: bool) -> torch.Tensor:
    # detectron2 rounds the corners to the features' type (bfloat16 under autocast); exact keeps them
    corners = rois if exact_corners else rois.to(features.dtype)
    return _RoIAlign.apply(features, corners, self.output_size, self.spatial_scale, self.sampling_ratio,
                           self.aligned)


def pool_boxes(model: torch.nn.Module, exact_corners: bool = False) -> int:
    """Make every ``ROIAlign`` in ``model`` pool through ``_RoIAlign`` (at the exact corners where
    ``exact_corners``); returns how many (0 is a model without box pooling)."""
    poolers = [m for m in model.modules() if isinstance(m, ROIAlign)]
    for pooler in poolers:
        pooler.forward = types.MethodType(functools.partial(_pool, exact_corners=exact_corners), pooler)
    return len(poolers)

