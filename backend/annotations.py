"""Label Studio annotations -> training boxes, with the consensus of several experts.

The paper had three experts cross-check every image. When a task has several annotations, a box
counts when at least ``min_agreement`` annotators drew it (IoU >= 0.5, same category); its
coordinates are the mean of theirs. An annotation marked ground truth wins outright. Cancelled
(skipped) annotations are left out. A submitted annotation without any box (drawn nothing, or every
pre-annotated box deleted) is the expert's "no lesion": the task trains as a negative image
(BI-RADS 1), as the importers read an image without boxes; an annotation whose boxes all carry
labels outside the BI-RADS mapping says nothing. A task whose annotators agree on no box is kept
out of training and listed for review.

Boxes here are in percent of the image (Label Studio's own unit), so annotators' boxes compare
without knowing the image size.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from backend.labels import LabelMap
from model.records import Box

MATCH_IOU = 0.5


@dataclass
class TaskLabels:
    task_id: int
    boxes: list[Box] = field(default_factory=list)   # percent coordinates
    status: str = "ok"        # ok | no_annotation | no_agreement
    annotators: int = 0


@dataclass
class Conversion:
    tasks: list[TaskLabels]
    unknown_labels: Counter

    @property
    def usable(self) -> list[TaskLabels]:
        return [t for t in self.tasks if t.status == "ok"]

    @property
    def for_review(self) -> list[int]:
        return [t.task_id for t in self.tasks if t.status == "no_agreement"]


def _regions(annotation: dict, labels: LabelMap) -> list[dict]:
    return [r for r in annotation.get("result") or []
            if r.get("type") == "rectanglelabels" and r.get("from_name") in (None, labels.from_name)]


def _boxes(annotation: dict, labels: LabelMap, unknown: Counter) -> list[Box]:
    boxes = []
    for region in _regions(annotation, labels):
        value = region.get("value") or {}
        names = value.get("rectanglelabels") or []
        category = labels.category_of(names[0]) if names else None
        if category is None:
            unknown[names[0] if names else "(no label)"] += 1
            continue
        x, y = float(value.get("x", 0)), float(value.get("y", 0))
        boxes.append(Box(x, y, x + float(value.get("width", 0)), y + float(value.get("height", 0)), category))
    return boxes


def consensus(per_annotator: list[list[Box]], min_agreement: int) -> list[Box]:
    """Boxes drawn by at least ``min_agreement`` annotators (greedy matching, one box each)."""
    agreed = []
    remaining = [list(boxes) for boxes in per_annotator]
    for index, boxes in enumerate(remaining):
        for box in list(boxes):
            group = [box]
            boxes.remove(box)
            for other in remaining[index + 1:]:
                match = max((b for b in other if b.category == box.category and b.iou(box) >= MATCH_IOU),
                            key=box.iou, default=None)
                if match is not None:
                    group.append(match)
                    other.remove(match)
            if len(group) >= min_agreement:
                n = len(group)
                agreed.append(Box(sum(b.x0 for b in group) / n, sum(b.y0 for b in group) / n,
                                  sum(b.x1 for b in group) / n, sum(b.y1 for b in group) / n, box.category))
    return agreed


def task_labels(task: dict, labels: LabelMap, min_agreement: int, unknown: Counter) -> TaskLabels:
    annotations = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    drawn = [(a, _boxes(a, labels, unknown)) for a in annotations]
    # boxes, or none at all ("no lesion"); not an annotation whose every label was unknown
    drawn = [(a, boxes) for a, boxes in drawn if boxes or not _regions(a, labels)]
    result = TaskLabels(task_id=task["id"], annotators=len(drawn))
    truth = [boxes for a, boxes in drawn if a.get("ground_truth")]
    if truth:
        result.boxes = truth[-1]
    elif len(drawn) == 1:
        result.boxes = drawn[0][1]
    elif drawn:
        result.boxes = consensus([boxes for _, boxes in drawn], min(min_agreement, len(drawn)))
        if not result.boxes and any(boxes for _, boxes in drawn):  # all saying "no lesion" agree
            result.status = "no_agreement"
    else:
        result.status = "no_annotation"
    return result


def convert(tasks: list[dict], labels: LabelMap, min_agreement: int) -> Conversion:
    unknown: Counter = Counter()
    return Conversion([task_labels(t, labels, min_agreement, unknown) for t in tasks], unknown)
