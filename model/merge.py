"""One box per lesion: detectron2 suppresses overlapping boxes per class, so one lesion can come back
as "3" and as "5". An annotator wants one box per lesion: of boxes overlapping at IoU >= the merge
IoU, whatever their categories, the better one stays; the others' categories remain visible in its
class_scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torchvision.ops import nms

from model.records import Detection


def one_box_per_lesion(xyxy: torch.Tensor, keys: torch.Tensor, iou: float) -> torch.Tensor:
    """Indices of the boxes to keep, in their given order: a box overlapping a better-keyed one at
    IoU >= ``iou`` goes."""
    return nms(xyxy.float(), keys.float(), iou).sort().values


def merged(detection: Detection, iou: float) -> Detection:
    """``detection`` with one box per lesion, the better by ``Detection.rank_of`` (the box a display
    puts on top) kept with its verdicts (class scores, P(malignant), rank)."""
    if len(detection.boxes) < 2:
        return detection
    xyxy = torch.tensor([[b.x0, b.y0, b.x1, b.y1] for b in detection.boxes])
    keys = torch.tensor([detection.rank_of(b) for b in detection.boxes])
    keep = one_box_per_lesion(xyxy, keys, iou).tolist()

    def kept(values: Sequence) -> tuple:  # per-box tuples may be empty (no box classifier)
        return tuple(values[i] for i in keep) if values else ()

    return replace(detection, boxes=kept(detection.boxes), class_scores=kept(detection.class_scores),
                   malignancy=kept(detection.malignancy), ranks=kept(detection.ranks))
