"""Label Studio's rectangle regions and which annotation of a task counts: defined here once.

A region is a RectangleLabels result: ``value`` holds x, y, width, height in percent of the image as
the browser shows it (EXIF orientation applied, as ``model.io`` reads images), a ``rotation`` in
degrees clockwise about its top-left corner (x, y) and the label text first in ``rectanglelabels``;
``from_name`` and ``to_name`` name the control and the image. Written by the exporter and the
backend's predictions (never rotated), read by the importer and the training job, which take a
rotated rectangle as the upright box around it (the detector's boxes are upright).

Which boxes a task stands for (the paper had three experts cross-check every image):
- cancelled (skipped) annotations say nothing;
- an annotation marked ground truth wins outright;
- an annotation with no rectangle at all (drawn nothing, or every pre-annotated box deleted) is the
  expert's "no lesion": a negative image, like an imported image without boxes; so is one whose
  only rectangles are labelled BI-RADS 1 (negative), which are no lesion to learn;
- an annotation with any rectangle whose label is outside the BI-RADS mapping says nothing: the
  lesion under that label would otherwise be learnt as background;
- an annotator who submitted several annotations of one task counts once, by the latest (their
  ground truth, where one is marked);
- with several annotations, a box counts when at least ``min_agreement`` annotators drew it
  (IoU >= 0.5, same category), at the mean of their coordinates; annotators who agree on no box
  (a lesion against "no lesion", or different lesions) leave the task for review.

Plain dicts in, ``model.records.Box`` out: no Label Studio import.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from math import cos, radians, sin

from model.records import MATCH_IOU, Box
from model.taxonomy import NO_LESION

TYPE = "rectanglelabels"
DEFAULT_MIN_AGREEMENT = 2  # annotators who must draw a box (the backend's MIN_AGREEMENT default)
OK, NO_ANNOTATION, NO_AGREEMENT, MALFORMED = "ok", "no_annotation", "no_agreement", "malformed"


class MalformedRegion(ValueError):
    """A rectangle region without usable coordinates or label."""


def to_region(box: Box, width: int, height: int, label: str, from_name: str, to_name: str,
              region_id: str, malignancy: float | None = None) -> dict:
    """A region for a box in pixels of a ``width`` x ``height`` image (with its score, if it has one).
    A model's P(malignant) for the box goes into the region's meta text, which Label Studio shows
    in the region's details beside the label (the expert's BI-RADS call stays the label)."""
    region = {"id": region_id, "from_name": from_name, "to_name": to_name, "type": TYPE,
              "original_width": width, "original_height": height, "image_rotation": 0,
              "value": {"x": 100 * box.x0 / width, "y": 100 * box.y0 / height, "width": 100 * box.width / width,
                        "height": 100 * box.height / height, "rotation": 0, "rectanglelabels": [label]}}
    if box.score is not None:
        region["score"] = round(box.score, 4)
    if malignancy is not None:
        region["meta"] = {"text": [malignancy_note(malignancy)]}
    return region


def task_patient(data: dict) -> str | None:
    """The patient a task's image shows, where its data names one (``patient``, as `birads import`
    writes it): a patient's images stay on one side of a held-out split."""
    patient = data.get("patient")
    return str(patient) if isinstance(patient, str | int) and not isinstance(patient, bool) and patient != "" \
        else None


def malignancy_note(malignancy: float) -> str:
    return f"P(malignant) {malignancy:.2f}, model estimate"


def rectangles(annotation: dict, from_name: str | None = None) -> list[tuple[tuple[str, ...], Box]]:
    """(label texts, box in percent with category "") of each rectangle of ``from_name`` (any if
    None): a region of a RectangleLabels with choice="multiple" carries several."""
    found = []
    for number, region in enumerate(annotation.get("result") or []):
        if not isinstance(region, dict) or region.get("type") != TYPE:
            continue
        if from_name is not None and region.get("from_name") not in (None, from_name):
            continue
        try:
            value = region["value"]
            x, y, w, h = (float(value[k]) for k in ("x", "y", "width", "height"))
            labels = tuple(str(label) for label in value["rectanglelabels"])
            labels[0]  # noqa: B018  (a region without a label is malformed)
            box = _upright(region, x, y, w, h, float(value.get("rotation") or 0))
        except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError) as exc:
            raise MalformedRegion(f"result[{number}]: malformed region ({exc!r})") from None
        found.append((labels, box))
    return found


def _upright(region: dict, x: float, y: float, w: float, h: float, rotation: float) -> Box:
    """The upright box (percent, clipped to the image) around a rectangle rotated ``rotation``
    degrees about (x, y): turned in pixels, so the region must carry its image's original size."""
    if rotation % 360 == 0:
        return Box(x, y, x + w, y + h, "")
    width, height = float(region["original_width"]), float(region["original_height"])
    if width <= 0 or height <= 0:
        raise ValueError(f"original size {width:g} x {height:g}")
    angle = radians(rotation)
    corners = [(dx * w * width / 100, dy * h * height / 100) for dx in (0, 1) for dy in (0, 1)]
    xs = [x + 100 * (px * cos(angle) - py * sin(angle)) / width for px, py in corners]
    ys = [y + 100 * (px * sin(angle) + py * cos(angle)) / height for px, py in corners]
    return Box(max(0.0, min(xs)), max(0.0, min(ys)), min(100.0, max(xs)), min(100.0, max(ys)), "")


def in_pixels(box: Box, width: int, height: int) -> Box:
    return Box(box.x0 * width / 100, box.y0 * height / 100, box.x1 * width / 100, box.y1 * height / 100,
               box.category, box.score)


@dataclass
class TaskBoxes:
    task_id: object
    boxes: list[Box] = field(default_factory=list)   # percent coordinates
    status: str = OK           # ok | no_annotation | no_agreement | malformed
    annotators: int = 0
    detail: str = ""
    # the Label Studio ids of the annotations its boxes stand for (a version's record of what it learnt)
    annotations: list = field(default_factory=list)


@dataclass
class Conversion:
    tasks: list[TaskBoxes]
    unknown_labels: Counter

    @property
    def usable(self) -> list[TaskBoxes]:
        return [t for t in self.tasks if t.status == OK]

    @property
    def for_review(self) -> list:
        return [t.task_id for t in self.tasks if t.status in (NO_AGREEMENT, MALFORMED)]


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


def _categorised(annotation: dict, category_of: Callable[[str], str | None], from_name: str | None,
                 unknown: Counter) -> tuple[bool, list[Box]]:
    """(whether it says anything, its lesion boxes with a BI-RADS category): it says nothing when a
    rectangle has no label with a category, or labels of two; other labels beside one BI-RADS label
    ("Calcified", "BI-RADS 4A") leave its category; BI-RADS 1 (negative) rectangles mark no lesion."""
    boxes, says = [], True
    for labels, box in rectangles(annotation, from_name):
        categories = {c for c in map(category_of, labels) if c is not None}
        category = categories.pop() if len(categories) == 1 else None
        if category is None:
            unknown[" + ".join(labels)] += 1
            says = False
        elif category != NO_LESION:
            boxes.append(Box(box.x0, box.y0, box.x1, box.y1, category))
    return says, boxes


def _annotator(annotation: dict) -> object:
    who = annotation.get("completed_by")
    return who.get("id") if isinstance(who, dict) else who


def _moment(stamp: object) -> datetime:
    """An ISO time as Label Studio writes it ("...Z", with or without fractions), or the earliest."""
    try:
        moment = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _one_per_annotator(annotations: list[dict]) -> list[dict]:
    """Each annotator's ground truth or latest annotation (by update time, then id); annotations
    that name no annotator are each their own."""
    kept: dict[object, tuple[tuple, dict]] = {}
    for number, annotation in enumerate(annotations):
        who = _annotator(annotation)
        key = ("unnamed", number) if who is None else who
        rank = (bool(annotation.get("ground_truth")), _moment(annotation.get("updated_at")),
                annotation.get("id") if isinstance(annotation.get("id"), int) else -1)
        if key not in kept or rank >= kept[key][0]:
            kept[key] = (rank, annotation)
    return [annotation for _, annotation in kept.values()]


def task_boxes(task: dict, category_of: Callable[[str], str | None], min_agreement: int,
               unknown: Counter, from_name: str | None = None) -> TaskBoxes:
    """The boxes a task stands for, by the rules in this module's docstring."""
    result = TaskBoxes(task_id=task.get("id"))
    annotations = _one_per_annotator([a for a in task.get("annotations") or []
                                      if isinstance(a, dict) and not a.get("was_cancelled")])
    try:
        drawn = [(a, *_categorised(a, category_of, from_name, unknown)) for a in annotations]
    except MalformedRegion as exc:
        result.status, result.detail = MALFORMED, str(exc)
        return result
    drawn = [(a, boxes) for a, says, boxes in drawn if says]
    result.annotators = len(drawn)
    truth = [(a, boxes) for a, boxes in drawn if a.get("ground_truth")]
    if truth or len(drawn) == 1:
        chosen, result.boxes = (truth or drawn)[-1]
        result.annotations = [chosen.get("id")]
    elif drawn:
        result.boxes = consensus([boxes for _, boxes in drawn], min(min_agreement, len(drawn)))
        result.annotations = [a.get("id") for a, _ in drawn]
        if not result.boxes and any(boxes for _, boxes in drawn):  # all saying "no lesion" agree
            result.status = NO_AGREEMENT
    else:
        result.status = NO_ANNOTATION
    return result


def convert(tasks: list[dict], category_of: Callable[[str], str | None], min_agreement: int,
            from_name: str | None = None) -> Conversion:
    unknown: Counter = Counter()
    return Conversion([task_boxes(t, category_of, min_agreement, unknown, from_name) for t in tasks], unknown)
