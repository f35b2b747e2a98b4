"""How the detector pools each box's features (detectron2's ``ROIAlign`` layers, replaced in place).

Training on a CPU: torchvision's CPU kernel for RoIAlign's backward runs on one core; on a 2-core
AMD EPYC Zen 4 it and its autograd node took about 15 % of a training iteration (docs/results.md
item 74). Every channel's output and gradient depend on that channel alone, so ``pool_boxes`` runs
the same kernels on the channels in parts, one per thread, each part computed by the same code in
the same order: the results are bitwise those of one call, and a training run is the same run,
faster. Prediction (no gradient) runs one call, as detectron2 does. On other devices, or with
deterministic algorithms asked for, detectron2's own pooling runs.

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
from torch.nn.modules.utils import _pair
from torchvision.ops import roi_align

LOW_PRECISION = (torch.bfloat16, torch.float16)  # what torchvision's autocast pools in float32


def _in_channel_parts(compute: Callable[[slice], torch.Tensor], channels: int, parts: int) -> torch.Tensor:
    """``compute`` of every channel slice, in ``parts`` over threads, concatenated in channel order.
    torchvision's kernels release the GIL; a pool per call, so a forked RQ work-horse never
    inherits one. Grad mode is per thread: the workers run without, as the caller's kernels do."""
    parts = min(parts, channels)
    if parts <= 1:
        return compute(slice(0, channels))

    def without_grad(channel_slice: slice) -> torch.Tensor:
        with torch.no_grad():
            return compute(channel_slice)

    bounds = [channels * i // parts for i in range(parts + 1)]
    slices = [slice(a, b) for a, b in zip(bounds, bounds[1:])]
    with ThreadPoolExecutor(parts - 1) as pool:
        others = [pool.submit(without_grad, s) for s in slices[1:]]
        first = compute(slices[0])  # this thread computes one part while the pool computes the others
        return torch.cat([first, *(other.result() for other in others)], dim=1)


class _RoIAlign(torch.autograd.Function):
    """torchvision's RoIAlign on a CPU in ``dtype`` (float32 where its autocast would cast),
    returned in the features' type; forward and backward in channel parts when training."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, rois: torch.Tensor, output_size: tuple[int, int],
                spatial_scale: float, sampling_ratio: int, aligned: bool, dtype: torch.dtype) -> torch.Tensor:
        rois = rois.to(dtype)
        ctx.save_for_backward(rois)
        ctx.pooling = (features.shape, features.dtype, spatial_scale, output_size, sampling_ratio, aligned)
        computed = features.to(dtype)
        parts = torch.get_num_threads() if ctx.needs_input_grad[0] else 1  # prediction: one call

        def pool(channels: slice) -> torch.Tensor:
            return torch.ops.torchvision.roi_align(computed[:, channels], rois, spatial_scale, output_size[0],
                                                   output_size[1], sampling_ratio, aligned)

        return _in_channel_parts(pool, features.shape[1], parts).to(features.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (rois,) = ctx.saved_tensors
        shape, dtype, spatial_scale, output_size, sampling_ratio, aligned = ctx.pooling
        grad = grad.to(rois.dtype)
        batch, channels, height, width = shape

        def gradient(part: slice) -> torch.Tensor:
            return torch.ops.torchvision._roi_align_backward(
                grad[:, part].contiguous(), rois, spatial_scale, output_size[0], output_size[1], batch,
                part.stop - part.start, height, width, sampling_ratio, aligned)

        grad_features = _in_channel_parts(gradient, channels, torch.get_num_threads())
        return grad_features.to(dtype), None, None, None, None, None, None


def _pool(self: ROIAlign, features: torch.Tensor, rois: torch.Tensor, exact_corners: bool) -> torch.Tensor:
    # no CPU kernel to split (or torchvision's own deterministic and quantized paths to keep):
    # detectron2's pooling, or item 68's float32 one at the exact corners, as before
    if features.device.type != "cpu" or features.is_quantized or torch.are_deterministic_algorithms_enabled():
        if exact_corners:
            return roi_align(features.float(), rois.float(), self.output_size, self.spatial_scale,
                             self.sampling_ratio, self.aligned).to(features.dtype)
        return ROIAlign.forward(self, features, rois)
    assert rois.dim() == 2 and rois.size(1) == 5  # as detectron2's
    # detectron2 rounds the corners to the features' type (bfloat16 under autocast); exact keeps them
    corners = rois if exact_corners else rois.to(features.dtype)
    autocast = torch.is_autocast_enabled("cpu") and features.dtype in LOW_PRECISION
    dtype = torch.float32 if exact_corners or autocast else features.dtype
    return _RoIAlign.apply(features, corners, _pair(self.output_size), self.spatial_scale, self.sampling_ratio,
                           self.aligned, dtype)


def pool_boxes(model: torch.nn.Module, exact_corners: bool = False) -> int:
    """Make every ``ROIAlign`` in ``model`` pool through ``_pool`` (at the exact corners where
    ``exact_corners``); returns how many (0 is a model without box pooling)."""
    poolers = [m for m in model.modules() if isinstance(m, ROIAlign)]
    for pooler in poolers:
        pooler.forward = types.MethodType(functools.partial(_pool, exact_corners=exact_corners), pooler)
    return len(poolers)
