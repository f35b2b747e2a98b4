"""Plain data that crosses the seam between model/ and its callers: no detectron2, no Label Studio.

Boxes are in pixels of the image as displayed (EXIF orientation applied), XYXY, absolute.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Two boxes overlapping at this IoU or more are the same lesion: the AP50 criterion, the simulated
# expert's match of a shown box to the truth, annotators' agreement on a box.
MATCH_IOU = 0.5
# Box voting's IoU where the product votes (backend BOX_VOTING_IOU, `birads --box-voting`): on by the
# rule fixed before measuring, which passed on two recipe models (docs/results.md items 20-21);
# ``Predictor`` itself votes only when told to (model.box_voting).
BOX_VOTING_IOU = 0.5
# Where a model runs, as the backend's DEVICE and `birads --device` name it (model.config.resolve_device)
DEVICE_NAME = r"auto|cpu|cuda(:\d+)?"
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
# How a training rotation turns a box into a training box (TrainSettings.box_rotation, `birads train
# --box-rotation`, model.augment): "corners", detectron2's box around the box's rotated corners,
# larger than the lesion it framed; "ellipse", the box around the rotated ellipse inscribed in it.
BOX_ROTATIONS = ("corners", "ellipse")


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float
    category: str
    score: float | None = None  # None for an expert's box

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    def intersection(self, other: Box) -> float:
        """The area the two boxes share."""
        ix = max(0.0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0.0, min(self.y1, other.y1) - max(self.y0, other.y0))
        return ix * iy

    def iou(self, other: Box) -> float:
        inter = self.intersection(other)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


@dataclass
class ImageRecord:
    """One image and its expert boxes (a training or evaluation record)."""

    image_id: str
    path: str
    width: int
    height: int
    boxes: list[Box] = field(default_factory=list)
    patient: str | None = None          # to keep splits patient-disjoint
    split: str | None = None            # e.g. "fold1" (BUS-BRA) or "part1" (BrEaST)
    birads: str | None = None           # the experts' image-level category
    pathology: str | None = None        # "benign" / "malignant" where biopsy-proven; else None
    masks: list[str] = field(default_factory=list)  # the expert's lesion outlines (mask images, lesion
                                                     # white) the boxes came from; none where drawn as boxes

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ImageRecord:
        data = dict(data)
        data["boxes"] = [Box(**b) for b in data.get("boxes", [])]
        return cls(**data)


@dataclass(frozen=True)
class Detection:
    """What the predictor returns for one image."""

    boxes: tuple[Box, ...]
    width: int
    height: int
    class_scores: tuple[dict[str, float], ...] = ()  # per box: softmax over all classes
    malignancy: tuple[float, ...] = ()  # per box: P(malignant at pathology), where the model has a
                                        # box classifier (its pathology head, read as
                                        # model.malignancy_reading says); else empty
    ranks: tuple[float, ...] = ()  # per box: how likely it is the lesion, where the box classifier
                                   # re-ranks (``rescore``); else empty: the score ranks

    def _of(self, values: tuple[float, ...], box: Box) -> float | None:
        """``box``'s entry in a per-box tuple, or None where the tuple is empty."""
        return next((v for b, v in zip(self.boxes, values) if b == box), None)

    def malignancy_of(self, box: Box) -> float | None:
        """``box``'s P(malignant), or None where the model has no box classifier."""
        return self._of(self.malignancy, box)

    def rank_of(self, box: Box) -> float:
        """What orders ``box`` among all boxes (the top box, AP): its rank where the model re-ranks,
        else its score. The score alone decides whether a box is shown at a threshold."""
        rank = self._of(self.ranks, box)
        return (box.score or 0.0) if rank is None else rank

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Detection:
        return cls(boxes=tuple(Box(**b) for b in data["boxes"]), width=data["width"], height=data["height"],
                   class_scores=tuple(data.get("class_scores", ())), malignancy=tuple(data.get("malignancy", ())),
                   ranks=tuple(data.get("ranks", ())))

    def top(self) -> Box | None:
        """The box most likely the lesion."""
        return max(self.boxes, key=self.rank_of, default=None)

    def confidence(self, threshold: float, shown: Sequence[Box] | None = None) -> float:
        """Confidence in the pre-annotation shown: the lowest score among the boxes shown (``shown``;
        None: those at ``threshold``), or with none shown, 1 minus the highest score of any box (how
        sure "no lesion" is). Low values mark the images most worth an expert's look first."""
        if shown is None:
            shown = [b for b in self.boxes if (b.score or 0.0) >= threshold]
        if shown:
            return min(b.score or 0.0 for b in shown)
        return 1.0 - max((b.score or 0.0 for b in self.boxes), default=0.0)


def save_records(records: list[ImageRecord], path: Path) -> None:
    from model.io import write_atomic

    write_atomic(path, json.dumps([r.to_dict() for r in records], indent=1))


def load_records(path: Path) -> list[ImageRecord]:
    return [ImageRecord.from_dict(d) for d in json.loads(Path(path).read_text())]
