"""Box features pooled at the boxes' own corners under bf16 (``TrainSettings.roi_align_fp32``).

Under bfloat16 autocast the FPN's features are bfloat16, and detectron2's ``ROIAlign`` casts the
boxes to the features' type before pooling: every proposal's corners are rounded to 8 significant
bits (up to 1 px between 256 and 512 px, 2 px above) in training and in prediction, while the box
head learns its offsets against the exact proposals. With this on, the pooling runs in float32 at
the exact corners. A model records the setting (model.json); its predictor and its fine-tunes pool
as it was trained. Off by default: every kept model was trained without it (docs/results.md item
68 has the rule that would turn it on).
"""

from __future__ import annotations

import types

import torch
from detectron2.layers import ROIAlign
from torchvision.ops import roi_align


def _pool_in_float32(self: ROIAlign, features: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
    pooled = roi_align(features.float(), rois.float(), self.output_size, self.spatial_scale,
                       self.sampling_ratio, self.aligned)
    return pooled.to(features.dtype)


def pool_at_exact_corners(model: torch.nn.Module) -> int:
    """Make every ``ROIAlign`` in ``model`` pool in float32 at the boxes' exact corners; returns
    how many (0 is a model without box pooling, which a caller may treat as an error)."""
    poolers = [m for m in model.modules() if isinstance(m, ROIAlign)]
    for pooler in poolers:
        pooler.forward = types.MethodType(_pool_in_float32, pooler)
    return len(poolers)
