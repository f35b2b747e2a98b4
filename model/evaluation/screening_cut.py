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
from model.evaluation.evaluate import table_ii_scores
from model.io import write_atomic
from model.records import Detection, ImageRecord

CUT_FILE = "screening_cut.json"
log = logging.getLogger(__name__)


def youden_cut(scores: Sequence[float], truth: Sequence[bool]) -> float:
    """The cut (positive at score >= cut) with the highest sensitivity + specificity, below every
    score or halfway between two neighbouring ones (never on an image itself); the lowest on ties."""
    positives = sum(truth)
    negatives = len(truth) - positives
    if not positives or not negatives:
        raise ValueError("a cut needs positive and negative images")
    values = sorted(set(scores))
    candidates = [values[0] - 1.0, *((a + b) / 2 for a, b in zip(values, values[1:]))]

    def youden(cut: float) -> int:  # (sensitivity + specificity) x positives x negatives, exact
        found = sum(s >= cut for s, t in zip(scores, truth) if t)
        cleared = sum(s < cut for s, t in zip(scores, truth) if not t)
        return found * negatives + cleared * positives

    return max(candidates, key=lambda cut: (youden(cut), -cut))


def fit_on_records(records: Sequence[ImageRecord], detections: Sequence[Detection],
                   threshold: str = taxonomy.BIOPSY_THRESHOLD) -> dict | None:
    """The cut fitted on the Table II images of ``records`` (``detections``: the second model's),
    with how many images it rests on; None without both BI-RADS 5 and 1-3 images."""
    rows = table_ii_scores(records, detections, threshold)
    truth, scores = [t for _, t, _ in rows], [s for _, _, s in rows]
    if not any(truth) or all(truth):
        log.warning("no Table II cut: the data needs BI-RADS 5 and BI-RADS 1-3 images")
        return None
    return {"cut": youden_cut(scores, truth), "images": len(rows), "positives": sum(truth),
            "biopsy_threshold": threshold}


def store_cut(model_dir: str | Path, fitted: dict | None) -> Path:
    """Write ``fitted``; None removes a cut fitted before, so evaluate never reports a stale one."""
    path = Path(model_dir) / CUT_FILE
    if fitted is None:
        path.unlink(missing_ok=True)
    else:
        write_atomic(path, json.dumps(fitted, indent=1))
    return path


def load_cut(model_dir: str | Path, threshold: str = taxonomy.BIOPSY_THRESHOLD) -> dict | None:
    """The cut fitted for this second model at ``threshold``, or None."""
    path = Path(model_dir) / CUT_FILE
    if not path.is_file():
        return None
    fitted = json.loads(path.read_text())
    if fitted.get("biopsy_threshold", taxonomy.BIOPSY_THRESHOLD) != threshold:
        log.warning("%s was fitted at BI-RADS >= %s, not %s: not reported", path,
                    fitted.get("biopsy_threshold"), threshold)
        return None
    return fitted


def fitted_on(fitted: dict) -> str:
    """Where a cut was fitted, for a report: the dataset folder's name and its splits."""
    data = Path(str(fitted.get("data", "")).split(":", 1)[-1]).name or "unknown data"
    return " ".join([data, *(fitted.get("splits") or [])])
