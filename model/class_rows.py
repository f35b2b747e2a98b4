"""Fine-tuning onto other classes: each class's output rows start from its parent's.

detectron2's checkpointer skips a layer whose shape changed, so a detector fine-tuned onto another
set of classes would start its box predictor (the class scores and the per-class box deltas) from
random weights and forget what its parent knew of every category: the paper's second model (no
BI-RADS 4) fine-tuned from the first, or a project that labels 4A/4B/4C fine-tuned from a starter
model of plain 4. Here each new class takes its parent's rows: the same class, else the class it
rolls up to (4A, 4B, 4C <- 4), else the mean of the parent's classes that roll up to it
(4 <- 4A, 4B, 4C), its class score's bias moved so that the split or merged classes hold the
parent's share of the softmax. The background row is kept. A class with no counterpart keeps its
random rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from model import modeldir, taxonomy
from model.modeldir import BOX_DELTAS, CLASS_SCORES

BOX_DIM = 4  # detectron2's Faster R-CNN regresses (dx, dy, dw, dh) per class


def _rolls_onto(category: str, target: str) -> bool:
    try:
        return taxonomy.roll_up(category, [target]) == target
    except taxonomy.UnknownCategory:
        return False


def parent_classes_of(parent: Sequence[str], classes: Sequence[str]) -> dict[str, list[str]]:
    """For each of ``classes`` that has a counterpart among ``parent``, the parent classes whose
    rows it starts from."""
    sources = {}
    for name in classes:
        match = ([p for p in parent if p == name] or [p for p in parent if _rolls_onto(name, p)]
                 or [p for p in parent if _rolls_onto(p, name)])
        if match:
            sources[name] = match
    return sources


def _copy_rows(target: torch.Tensor, source: torch.Tensor, rows: dict[int, list[int]], width: int) -> None:
    """``target``'s row block ``i`` (``width`` rows each) := the mean of ``source``'s blocks ``rows[i]``."""
    for child, parents in rows.items():
        blocks = torch.stack([source[p * width:(p + 1) * width] for p in parents])
        target[child * width:(child + 1) * width] = blocks.mean(0).to(target.device, target.dtype)


def _keep_shares(bias: torch.Tensor, rows: dict[int, list[int]]) -> None:
    """Copied rows keep each parent's share of the softmax: the n classes split from one parent
    class (4A, 4B, 4C <- 4) each take log n off their bias, so that together they hold what it
    held, not n times that; a class merged from m parents (4 <- 4A, 4B, 4C) adds log m to their
    mean, as the log of a sum of m equal exponentials would."""
    sharing: dict[tuple[int, ...], int] = {}
    for parents in rows.values():
        sharing[tuple(parents)] = sharing.get(tuple(parents), 0) + 1
    for child, parents in rows.items():
        bias[child] += math.log(len(parents)) - math.log(sharing[tuple(parents)])


def _changed(parent: Sequence[str], classes: Sequence[str]) -> dict[str, list[str]]:
    """``parent_classes_of``; empty where the classes are the same (the checkpointer then loads
    every row as it is)."""
    return {} if list(parent) == list(classes) else parent_classes_of(parent, classes)


def from_parent(parent_dir: str | Path, classes: Sequence[str]) -> dict[str, list[str]]:
    """``_changed`` for a model directory's classes."""
    return _changed(modeldir.read_info(parent_dir).classes, classes)


def inherit(model: torch.nn.Module, parent_dir: str | Path, classes: Sequence[str]) -> dict[str, list[str]]:
    """Set ``model``'s (a detector of ``classes``, just loaded from ``parent_dir``'s weights) box
    predictor rows from the parent's where the two class lists differ; returns ``from_parent``."""
    parent = modeldir.read_info(parent_dir).classes
    sources = _changed(parent, classes)
    if not sources:
        return {}
    rows = {classes.index(name): [parent.index(p) for p in found] for name, found in sources.items()}
    state = torch.load(Path(parent_dir) / modeldir.WEIGHTS, map_location="cpu", weights_only=True)["model"]
    params = dict(model.named_parameters())
    with torch.no_grad():
        for suffix in ("weight", "bias"):
            scores, source = params[f"{CLASS_SCORES}.{suffix}"], state[f"{CLASS_SCORES}.{suffix}"]
            _copy_rows(scores, source, rows, 1)
            if suffix == "bias":
                _keep_shares(scores, rows)
            scores[-1] = source[-1].to(scores.device, scores.dtype)  # background, last in detectron2
            deltas, source = params[f"{BOX_DELTAS}.{suffix}"], state[f"{BOX_DELTAS}.{suffix}"]
            if source.shape[0] == BOX_DIM * len(parent):  # class-agnostic deltas were loaded as they are
                _copy_rows(deltas, source, rows, BOX_DIM)
    return sources
