"""How a box's BI-RADS category is read from its class scores (the box head's softmax over the
model's categories). ``argmax``: the most probable category, the one most often exactly right
where the scores are calibrated. ``median``: the softmax read as an ordinal scale
(``taxonomy.median_category``), the category fewest rank steps from the truth on average."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from model import taxonomy
from model.records import Detection

SERVED_READING = "median"  # the backend's and `birads`'s default (docs/results.md item 26)

READINGS: dict[str, Callable[[Mapping[str, float]], str]] = {
    "argmax": lambda scores: max(scores, key=scores.get),
    "median": taxonomy.median_category,
}


def reader(reading: str) -> Callable[[Mapping[str, float]], str]:
    """The rule named ``reading``; a ValueError naming the known ones for any other name."""
    if reading not in READINGS:
        raise ValueError(f"category reading must be one of {list(READINGS)}, not {reading!r}")
    return READINGS[reading]


def relabelled(detection: Detection, reading: str) -> Detection:
    """``detection`` with every box named by ``reading`` of its class scores (unchanged where the
    model gave none)."""
    read = reader(reading)
    if not detection.class_scores:
        return detection
    return replace(detection, boxes=tuple(replace(box, category=read(scores))
                                          for box, scores in zip(detection.boxes, detection.class_scores)))
