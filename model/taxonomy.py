"""The BI-RADS categories, defined once: names, meaning, roll-ups, malignancy, image-level rules.

Two label sets exist in practice:

* ``FULL``   -- 1, 2, 3, 4A, 4B, 4C, 5 (BrEaST has the BI-RADS 4 subcategories);
* ``COARSE`` -- 1, 2, 3, 4, 5 (BUS-BRA, and many clinics, only record "4").

A model is trained on one label set; its class names are stored with it. ``roll_up`` maps a fine
category onto a coarser label set (4A/4B/4C -> 4); nothing maps the other way.

Rules used everywhere:

* **No lesion** is BI-RADS 1 ("negative"): an image with no box. Nobody draws a BI-RADS 1 box, so
  category 1 is never a detector class; it is what an image without detections is.
* **Image-level category** of an image with several boxes is the most suspicious one (the highest
  rank), as a radiologist reports the worst finding; with no box it is 1.
* **Biopsy recommended** (predicted malignant) when the category ranks at or above a threshold,
  BI-RADS 4 by default (``BIOPSY_THRESHOLD``); 4A, 4B and 4C all count as 4.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

# Category -> meaning (ACR BI-RADS Atlas, 5th edition, ultrasound).
MEANING: dict[str, str] = {
    "1": "Negative: no lesion",
    "2": "Benign finding",
    "3": "Probably benign (malignancy <= 2 %), short-interval follow-up",
    "4": "Suspicious (malignancy 2-95 %), biopsy",
    "4A": "Low suspicion (malignancy 2-10 %)",
    "4B": "Moderate suspicion (malignancy 10-50 %)",
    "4C": "High suspicion (malignancy 50-95 %)",
    "5": "Highly suggestive of malignancy (>= 95 %)",
}

FULL: tuple[str, ...] = ("1", "2", "3", "4A", "4B", "4C", "5")
COARSE: tuple[str, ...] = ("1", "2", "3", "4", "5")
SUBCATEGORIES_OF_4: tuple[str, ...] = ("4A", "4B", "4C")
NO_LESION = "1"
BIOPSY_THRESHOLD = "4"

# Order of suspicion: 4 sits with its subcategories; 4A < 4B < 4C.
_RANK: dict[str, float] = {"1": 1, "2": 2, "3": 3, "4": 4, "4A": 4.1, "4B": 4.2, "4C": 4.3, "5": 5}


class UnknownCategory(ValueError):
    """A value that is not a BI-RADS category."""


def normalize(value: object) -> str:
    """Canonical name of a BI-RADS value: ``"4a"``, ``"BI-RADS 4A"``, ``4``, ``"4.0"`` -> ``"4A"``/``"4"``."""
    text = str(value).strip().upper()
    for prefix in ("BI-RADS", "BIRADS", "BI RADS"):
        if text.startswith(prefix):
            text = text[len(prefix):].strip(" :-_")
    if text.endswith(".0"):
        text = text[:-2]
    if text not in _RANK:
        raise UnknownCategory(f"unknown BI-RADS category {value!r} (expected one of {', '.join(FULL)} or 4)")
    return text


def rank(category: str) -> float:
    return _RANK[normalize(category)]


def median_category(scores: Mapping[str, float]) -> str:
    """The ordinal reading of a softmax over categories: the first, in rank order, at which the
    probability summed from the lowest reaches half (the category least far, in expected rank
    steps, from the truth; argmax is the one most often exactly right)."""
    ordered = sorted(scores, key=rank)
    total, running = sum(scores.values()), 0.0
    for category in ordered:
        running += scores[category]
        if running >= total / 2:
            return category
    raise ValueError("no categories to choose from")


def roll_up(category: str, label_set: Sequence[str]) -> str:
    """Map ``category`` onto ``label_set``: itself if present, else 4A/4B/4C -> 4."""
    category = normalize(category)
    if category in label_set:
        return category
    if category in SUBCATEGORIES_OF_4 and "4" in label_set:
        return "4"
    raise UnknownCategory(f"BI-RADS {category} has no counterpart in labels {list(label_set)}")


def names(category: str, label_set: Sequence[str]) -> bool:
    """Whether ``label_set`` can name ``category``, as it is or rolled up (4A by a set of plain 4)."""
    try:
        roll_up(category, label_set)
    except UnknownCategory:
        return False
    return True


def is_malignant(category: str, threshold: str = BIOPSY_THRESHOLD) -> bool:
    """Biopsy recommended: the category ranks at or above ``threshold`` (4 counts 4A/4B/4C)."""
    return rank(category) >= rank(threshold)


def image_category(categories: Iterable[str]) -> str:
    """Image-level category: the most suspicious box; BI-RADS 1 when there is none."""
    categories = [normalize(c) for c in categories]
    return max(categories, key=rank) if categories else NO_LESION


def detector_classes(label_set: Sequence[str]) -> list[str]:
    """Classes a detector learns: every category of the label set but "no lesion"."""
    return [c for c in label_set if c != NO_LESION]


def label_set_for(categories: Iterable[str]) -> tuple[str, ...]:
    """The label set that covers ``categories``: FULL if any subcategory of 4 appears, else COARSE.

    A dataset mixing plain 4 with 4A/4B/4C cannot be learned as one taxonomy; plain 4 wins then
    (subcategories are rolled up), since it is the only label set valid for every box.
    """
    seen = {normalize(c) for c in categories}
    if "4" in seen or not seen & set(SUBCATEGORIES_OF_4):
        return COARSE
    return FULL


def project_label_set(config: Iterable[str], boxes: Iterable[str]) -> tuple[str, ...]:
    """The label set a project learns in: the one its config's categories can name; where the
    config names both plain 4 and 4A/4B/4C (docs/label_config.xml), the one its boxes need, so
    that experts who refine every 4 keep their subcategories (``label_set_for``)."""
    named = {normalize(c) for c in config}
    if "4" in named and named & set(SUBCATEGORIES_OF_4):
        return label_set_for(boxes)
    return label_set_for(named)
