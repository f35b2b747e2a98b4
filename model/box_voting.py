"""Box voting: each detected box moved to the weighted mean of the proposals that agree with it.

Faster R-CNN keeps one regressed proposal per lesion and suppresses its neighbours, though several
of them saw the same lesion; their consensus locates it better than the single winner when the
lesion's edge is ambiguous, as ultrasound margins are (Gidaris & Komodakis, "Object detection via a
multi-region & semantic segmentation-aware CNN model", ICCV 2015: voting among boxes at IoU >= 0.5,
weighted by score). The vote is about where the lesion is, not what it is: each proposal votes with
its box for its own most probable category, weighted by its probability of being a lesion at all.
A box's score and category are left as they are, and the box moves last: whatever else reads the
image at a box (the box classifier) reads it at the detector's own place, since read at the voted
places the classifier's rank picked other top boxes (docs/results.md item 18).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import NamedTuple

import torch
from torchvision.ops import box_iou

from model.records import Box

# proposals less likely than this to be a lesion do not vote: detectron2's own test-time floor
MIN_VOTER_SCORE = 0.05


class Voters(NamedTuple):
    """One image's voting proposals (M of them)."""

    places: torch.Tensor  # (M, 4): each one's box for its most probable lesion category
    weights: torch.Tensor  # (M,): its probability of being a lesion (1 - background)
    probabilities: torch.Tensor  # (M, K + 1): its softmax, background last


def vote(boxes: torch.Tensor, voters: torch.Tensor, weights: torch.Tensor, iou: float) -> torch.Tensor:
    """``boxes`` (N, 4) moved to the ``weights``-weighted mean of the ``voters`` (M, 4) that overlap
    each at IoU >= ``iou``; a box no voter overlaps stays where it is."""
    return _agreeing_mean(boxes, voters, weights, voters, boxes, iou)


def _agreeing_mean(boxes: torch.Tensor, voters: torch.Tensor, weights: torch.Tensor, values: torch.Tensor,
                   own: torch.Tensor, iou: float) -> torch.Tensor:
    """For each of ``boxes`` (N, 4), the ``weights``-weighted mean of the ``values`` (M, D) of the
    ``voters`` (M, 4) that overlap it at IoU >= ``iou``; its ``own`` row (N, D) where none does."""
    if not len(boxes) or not len(voters):
        return own
    agree = (box_iou(boxes, voters) >= iou).to(weights.dtype) * weights[None, :]
    total = agree.sum(dim=1, keepdim=True)
    return torch.where(total > 0, agree @ values / total.clamp_min(1e-12), own)


def voters(boxes: torch.Tensor, probabilities: torch.Tensor) -> Voters:
    """One image's proposals as voters, those less than MIN_VOTER_SCORE likely to be a lesion left out.

    ``boxes``: (R, 4 * K) per-category regressed boxes (or (R, 4), class-agnostic regression);
    ``probabilities``: (R, K + 1), background last, as detectron2's box predictor gives them."""
    keep = 1.0 - probabilities[:, -1] >= MIN_VOTER_SCORE
    return Voters(_own_boxes(boxes, probabilities)[keep], 1.0 - probabilities[keep, -1], probabilities[keep])


def voted_probabilities(kept: torch.Tensor, own: torch.Tensor, voting: Voters, iou: float) -> torch.Tensor:
    """Category voting (docs/results.md item 62): each of the ``kept`` boxes (N, 4) given the mean
    softmax of the ``voting`` proposals (its own among them) overlapping it at IoU >= ``iou``,
    weighted by their P(lesion); its ``own`` softmax (N, K + 1) where none does.
    The proposals around a lesion are so many slightly different views of it; their mean reading
    of its category is steadier than the one winner's."""
    return _agreeing_mean(kept, voting.places, voting.weights, voting.probabilities, own, iou)


def _own_boxes(boxes: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
    """Each proposal's regressed box for its most probable lesion category (R, 4)."""
    if boxes.shape[1] == 4:
        return boxes
    category = probabilities[:, :-1].argmax(dim=1)
    return boxes.view(len(boxes), -1, 4)[torch.arange(len(boxes)), category]


def moved(boxes: Sequence[Box], places: Sequence[Sequence[float]]) -> list[Box]:
    """``boxes`` at ``places`` (x0, y0, x1, y1 each, in the boxes' pixels), all else kept."""
    return [replace(box, x0=x0, y0=y0, x1=x1, y1=y1) for box, (x0, y0, x1, y1) in zip(boxes, places, strict=True)]
