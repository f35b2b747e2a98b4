"""How a box's P(malignant) is read where the model has a box classifier. ``pathology``: the
classifier's pathology head alone (trained on biopsy and follow-up outcomes). ``mean``: that
averaged with the box's class-score mass at BI-RADS 4 or above (always 4, whatever threshold an
evaluation screens at). At blend 0, the reference recipe's, those class scores are the detector's
own: two learners trained apart, on crops against pathology and on the detector's proposals
against the experts' categories (docs/results.md item 45); where a project's classifier blends
its categories in, they are partly the classifier's. The reading is what ranks images against
pathology (the top box's) and what Label Studio's malignancy note says of each box."""

from __future__ import annotations

from dataclasses import replace

from model import taxonomy
from model.records import Detection

SERVED_READING = "mean"  # the backend's and `birads`'s default: higher AUC on 7 of 7 kept sets (item 45)
READINGS = ("pathology", "mean")
HEAD_WEIGHT = 0.5  # the pathology head's share under ``mean`` (item 50 measured 0.25 and 0.75 beside it)


def category_mass(detection: Detection, number: int, threshold: str = taxonomy.BIOPSY_THRESHOLD) -> float:
    """The detector's probability mass on categories at or above ``threshold`` for box ``number``
    (without class scores: the box's score where its category is at or above, else 0)."""
    if detection.class_scores:
        return sum(p for c, p in detection.class_scores[number].items() if taxonomy.is_malignant(c, threshold))
    box = detection.boxes[number]
    return (box.score or 0.0) if taxonomy.is_malignant(box.category, threshold) else 0.0


def check(reading: str) -> str:
    """``reading``, or a ValueError naming the known ones."""
    if reading not in READINGS:
        raise ValueError(f"malignancy reading must be one of {list(READINGS)}, not {reading!r}")
    return reading


def reread(detection: Detection, reading: str, head_weight: float = HEAD_WEIGHT) -> Detection:
    """``detection`` with each box's P(malignant) read by ``reading`` (unchanged by ``pathology``,
    and where the model gave no P(malignant): no box classifier); under ``mean`` the pathology
    head weighs ``head_weight``, the box's class-score mass the rest."""
    if check(reading) == "pathology" or not detection.malignancy:
        return detection
    return replace(detection, malignancy=tuple(head_weight * m + (1 - head_weight) * category_mass(detection, number)
                                               for number, m in enumerate(detection.malignancy)))
