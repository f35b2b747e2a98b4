"""BI-RADS 4 -> 4A / 4B / 4C with a model trained without BI-RADS 4 (the paper's second model).

A model that never saw BI-RADS 4 has learned only the two ends: benign-looking (2, 3) and
malignant-looking (5). For a lesion the experts (or the first model) call BI-RADS 4, its class
distribution says where between the ends the lesion lies:

    likeness = P(5) / (P(2) + P(3) + P(5))          (background probability left out)

and two cut points split that into 4A (low suspicion) < 4B (moderate) < 4C (high). The default
cuts follow the BI-RADS malignancy ranges (4A up to 10 %, 4B up to 50 %); ``fit_cuts`` chooses
them on data that has subcategories (BrEaST) when the scores are not calibrated probabilities;
``fit_on_records`` does so from expert boxes and stores the cuts in the second model's directory
(``CUTS_FILE``), where ``load_cuts`` (and so the predictor) finds them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from model import taxonomy
from model.io import DataError, write_atomic
from model.records import Box, Detection, ImageRecord

DEFAULT_CUTS = (0.10, 0.50)
# What the two-model scheme can answer: a BI-RADS 4 box the second model finds nothing on stays 4.
SPLIT_CLASSES = ("2", "3", "4", "4A", "4B", "4C", "5")
CUTS_FILE = "subcategory_cuts.json"
MIN_IOU = 0.3
MIN_LESIONS = 10  # fewer, or a subcategory missing, and fitted cuts are mostly noise
log = logging.getLogger(__name__)


def malignancy_likeness(class_scores: dict[str, float]) -> float:
    """P(malignant-looking) among the lesion classes; 0.5 when the model gives them nothing."""
    benign = sum(p for c, p in class_scores.items() if taxonomy.rank(c) < 4)
    malignant = sum(p for c, p in class_scores.items() if taxonomy.rank(c) >= 5)
    total = benign + malignant
    return malignant / total if total > 0 else 0.5


def subcategory(likeness: float, cuts: tuple[float, float] = DEFAULT_CUTS) -> str:
    low, high = cuts
    if likeness < low:
        return "4A"
    return "4B" if likeness < high else "4C"


def fit_cuts(likeness: Sequence[float], truth: Sequence[str]) -> tuple[float, float]:
    """Cut points that classify the most lesions right; each cut lies halfway between two
    neighbouring likeness values (the lowest such cuts on ties), not on a lesion itself."""
    values = sorted(set(likeness))
    candidates = [0.0, *((a + b) / 2 for a, b in zip(values, values[1:])), 1.0000001]
    best, best_cuts = -1, DEFAULT_CUTS
    for i, low in enumerate(candidates):
        for high in candidates[i:]:
            right = sum(subcategory(x, (low, high)) == t for x, t in zip(likeness, truth))
            if right > best:
                best, best_cuts = right, (low, high)
    return best_cuts


def require_second_model(classes: Sequence[str], name: str) -> None:
    """Only a model that never learned BI-RADS 4 can place a 4 between its ends."""
    if any(int(taxonomy.rank(c)) == 4 for c in classes):
        raise DataError(f"{name} was trained with BI-RADS 4: it cannot split it "
                        "(train the second model with --without-birads-4)")


def matched_likeness(box: Box, second: Detection, min_iou: float = MIN_IOU) -> float | None:
    """Likeness from the second model's box that best overlaps ``box``; None without one."""
    if not second.boxes or not second.class_scores:
        return None
    match = max(range(len(second.boxes)), key=lambda i: second.boxes[i].iou(box))
    if second.boxes[match].iou(box) < min_iou:
        return None
    return malignancy_likeness(second.class_scores[match])


def fit_on_records(records: Sequence[ImageRecord], second: Sequence[Detection]) -> dict:
    """Cuts fitted on the experts' 4A/4B/4C boxes of ``records`` (``second``: the second model's
    detections on them), with how many lesions they rest on and how many they classify right."""
    likeness, truth = [], []
    for record, detection in zip(records, second):
        for box in (b for b in record.boxes if b.category in taxonomy.SUBCATEGORIES_OF_4):
            value = matched_likeness(box, detection)
            if value is not None:
                likeness.append(value)
                truth.append(box.category)
    if not truth:
        raise DataError("no 4A/4B/4C lesion found by the second model: nothing to fit cuts on")
    cuts = fit_cuts(likeness, truth)
    right = sum(subcategory(x, cuts) == t for x, t in zip(likeness, truth))
    fitted = {"cuts": list(cuts), "lesions": len(truth), "right": right}
    if len(truth) < MIN_LESIONS or len(set(truth)) < len(taxonomy.SUBCATEGORIES_OF_4):
        fitted["warning"] = (f"fitted on {len(truth)} lesions of {sorted(set(truth))}: too few to trust; "
                             f"the defaults {DEFAULT_CUTS} may serve better")
        log.warning(fitted["warning"])
    return fitted


def save_cuts(model_dir: str | Path, fitted: dict) -> Path:
    path = Path(model_dir) / CUTS_FILE
    write_atomic(path, json.dumps(fitted, indent=1))
    return path


def load_cuts(model_dir: str | Path) -> tuple[float, float]:
    """The cuts fitted for this second model, or the BI-RADS defaults."""
    path = Path(model_dir) / CUTS_FILE
    if not path.is_file():
        return DEFAULT_CUTS
    low, high = json.loads(path.read_text())["cuts"]
    return float(low), float(high)


class SubcategorySplitter:
    """Second opinion for BI-RADS 4 boxes from a model trained without BI-RADS 4.

    ``split(detection, second)``: every box the first model calls 4 (or 4A/4B/4C) is matched to
    the second model's best-overlapping box on the same image (IoU >= ``min_iou``); that box's
    class distribution gives the likeness and so 4A/4B/4C. Without a match the box stays as it was.
    """

    def __init__(self, cuts: tuple[float, float] = DEFAULT_CUTS, min_iou: float = MIN_IOU) -> None:
        self.cuts = cuts
        self.min_iou = min_iou

    def split(self, detection: Detection, second: Detection) -> Detection:
        boxes = list(detection.boxes)
        for number, box in enumerate(boxes):
            if int(taxonomy.rank(box.category)) != 4:
                continue
            likeness = matched_likeness(box, second, self.min_iou)
            if likeness is not None:
                boxes[number] = replace(box, category=subcategory(likeness, self.cuts))
        return replace(detection, boxes=tuple(boxes))
