"""Making a loaded detector cheaper to run in float32 without changing what it computes.

Two steps, both exact up to float rounding (docs/results.md item 54):
- a frozen batch norm is a fixed scale and shift after its convolution, so it is multiplied into
  that convolution's weights and bias once, instead of one more pass over every activation map;
- the tensors run in the channels-last layout, oneDNN's own on a CPU, so no convolution reorders
  its input and output.
"""

from __future__ import annotations

import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from torch import nn


def fold_frozen_batch_norms(model: nn.Module) -> int:
    """Fold each frozen batch norm into the detectron2 ``Conv2d`` that applies it, in place:
    ``(W x + b) s + t = (W s) x + (b s + t)``. Returns how many were folded. For inference only:
    the folded weights no longer match the checkpoint's names and values."""
    folded = 0
    for module in model.modules():
        if not (isinstance(module, Conv2d) and isinstance(module.norm, FrozenBatchNorm2d)):
            continue
        norm = module.norm
        with torch.no_grad():
            scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
            shift = norm.bias - norm.running_mean * scale
            module.weight.mul_(scale.reshape(-1, 1, 1, 1))
            bias = shift if module.bias is None else module.bias * scale + shift
        module.bias = nn.Parameter(bias, requires_grad=False)
        module.norm = None
        folded += 1
    return folded


def speed_up_float32(model: nn.Module) -> int:
    """Both steps on an inference-only ``model``; returns how many batch norms were folded."""
    folded = fold_frozen_batch_norms(model)
    model.to(memory_format=torch.channels_last)
    return folded
