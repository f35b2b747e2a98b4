"""Table II at a fitted cut: the second model's BI-RADS 5-vs-1-3 call from a threshold on its P(5).

The paper calls an image BI-RADS 5 when 5 is its model's most probable category. Where that model's
ranking is good but its most probable category is not (a high Table II AUC beside a low
specificity), a cut on the score the AUC ranks (``category_malignancy``: the image's highest P(5))
is the other operating point. ``fit_on_records`` chooses it on images other than those it is
reported on (``birads fit-cuts``: BrEaST part1) by Youden's J, and ``birads evaluate`` reports
Table II at it beside the paper's way. It changes no prediction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from model import taxonomy
from model.evaluation.evaluate import category_malignancy, in_table_ii
from model.io import write_atomic
from model.records import Detection, ImageRecord

CUT_FILE = "screening_cut.json"
log = logging.getLogger(__name__)


def youden_cut(scores: Sequence[float], truth: Sequence[bool]) -> float:
    """The cut (positive at score >= cut) with the highest sensitivity + specificity, halfway
    between two neighbouring scores (the lowest such cut on ties), never on an image itself."""
    values = sorted(set(scores))
    candidates = [*((a + b) / 2 for a, b in zip(values, values[1:])), values[-1] + 1.0]
    positives = sum(truth)
    negatives = len(truth) - positives

    def youden(cut: float) -> float:
        found = sum(s >= cut for s, t in zip(scores, truth) if t)
        cleared = sum(s < cut for s, t in zip(scores, truth) if not t)
        return found / positives + cleared / negatives

    return max(candidates, key=lambda cut: (youden(cut), -cut))


def fit_on_records(records: Sequence[ImageRecord], detections: Sequence[Detection],
                   threshold: str = taxonomy.BIOPSY_THRESHOLD) -> dict | None:
    """The cut fitted on the Table II images of ``records`` (``detections``: the second model's),
    with how many images it rests on; None without both BI-RADS 5 and 1-3 images."""
    rows = [(r.birads == "5", category_malignancy(d, threshold))
            for r, d in zip(records, detections) if in_table_ii(r)]
    truth, scores = [t for t, _ in rows], [s for _, s in rows]
    if not any(truth) or all(truth):
        log.warning("no screening cut: the data needs BI-RADS 5 and BI-RADS 1-3 images")
        return None
    return {"cut": youden_cut(scores, truth), "images": len(rows), "positives": sum(truth)}


def save_cut(model_dir: str | Path, fitted: dict) -> Path:
    path = Path(model_dir) / CUT_FILE
    write_atomic(path, json.dumps(fitted, indent=1))
    return path


def load_cut(model_dir: str | Path) -> float | None:
    """The cut fitted for this second model, or None."""
    path = Path(model_dir) / CUT_FILE
    return float(json.loads(path.read_text())["cut"]) if path.is_file() else None
