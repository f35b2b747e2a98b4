"""A per-category bias on the detector's class scores, fitted on held-out images and re-read on
evaluation reports' kept detections (docs/results.md item 67). Runs no model.

Each box's class scores are multiplied by exp(b_c) for its categories (b_4 = 0), rescaled to
their former sum (the box's P(lesion) stays), and read as served: the median category, and
P(malignant) the mean of the pathology head and the new mass at 4 or above. Places, scores and
ranks are kept. b is fitted by coordinate search maximising top-box BI-RADS accuracy.

    python scripts/category_bias.py FOLD4_REPORT PART2_REPORT [FOLD4_REPORT PART2_REPORT ...]

Fold 4 is cross-fitted (patients split in two by a hash of their id; each half scored with the
other's bias); part2 with the bias fitted on all of fold 4. A REPORT is a directory with
``metrics.json`` and ``detections.jsonl`` (``birads evaluate --out``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from model.category_reading import SERVED_READING as SERVED_CATEGORY  # noqa: E402
from model.category_reading import relabelled  # noqa: E402
from model.evaluation.evaluate import _common_classes, image_decision, image_truth, on_classes  # noqa: E402
from model.evaluation.report import malignancy_read_as, read_detections  # noqa: E402
from model.malignancy_reading import HEAD_WEIGHT, SERVED_READING, category_mass, reread  # noqa: E402
from model.records import Detection, ImageRecord  # noqa: E402
from scripts.classifier_naming import figures, scoring  # noqa: E402

BIASED = ("2", "3", "5")           # 4, the model's largest class, is the reference
GRID = [x / 4 for x in range(-8, 9)]  # -2 .. 2 in steps of 0.25
SWEEPS = 3


def biased(detection: Detection, bias: dict[str, float]) -> Detection:
    """``detection`` with its class scores shifted by ``bias`` and read as served."""
    if not detection.class_scores:
        return detection
    shifted = []
    for scores in detection.class_scores:
        raised = {c: p * math.exp(bias.get(c, 0.0)) for c, p in scores.items()}
        scale = sum(scores.values()) / sum(raised.values()) if sum(raised.values()) > 0 else 1.0
        shifted.append({c: p * scale for c, p in raised.items()})
    return relabelled(reread(replace(detection, class_scores=tuple(shifted)), SERVED_READING), SERVED_CATEGORY)


def pathology_heads(detection: Detection, read_as: str) -> Detection:
    """The box classifier's pathology head behind each stored P(malignant): stored as served
    (``mean``), the class-score mass is taken back out."""
    if read_as != SERVED_READING or not detection.malignancy:
        return detection
    heads = [(m - (1 - HEAD_WEIGHT) * category_mass(detection, i)) / HEAD_WEIGHT
             for i, m in enumerate(detection.malignancy)]
    return replace(detection, malignancy=tuple(heads))


def half(record: ImageRecord) -> int:
    """0 or 1: which half of the data a patient falls in (all their images in one)."""
    return hashlib.sha256(str(record.patient or record.image_id).encode()).digest()[0] % 2


def accuracy(records: list[ImageRecord], detections: list[Detection], scored: dict,
             bias: dict[str, float]) -> float:
    """Top-box BI-RADS accuracy as ``evaluate`` reads it, without its other figures (the fit calls
    this 150 times; ``compare`` checks it against ``evaluate`` once)."""
    classes = _common_classes(records, scored["classes"])
    _, named = on_classes(records, [biased(d, bias) for d in detections], classes)
    right = sum(image_decision(d, scored["score_threshold"], scored["decision"]) == image_truth(r, classes)
                for r, d in zip(records, named))
    return right / max(1, len(records))


def fit(records: list[ImageRecord], detections: list[Detection], scored: dict) -> dict[str, float]:
    bias = dict.fromkeys(BIASED, 0.0)
    for _ in range(SWEEPS):
        for category in BIASED:
            scores = {b: accuracy(records, detections, scored, dict(bias, **{category: b})) for b in GRID}
            best = max(scores.values())
            bias[category] = min((b for b, s in scores.items() if s == best), key=abs)
    return bias


def loaded(report: Path) -> tuple[list[ImageRecord], list[Detection], dict]:
    pairs = read_detections(report)
    read_as = malignancy_read_as(report)
    return [r for r, _ in pairs], [pathology_heads(d, read_as) for _, d in pairs], scoring(report)


def cross_read(records: list[ImageRecord], detections: list[Detection],
               fit_half: Callable[[list[ImageRecord], list[Detection]], Any],
               read: Callable[[Detection, Any], Detection]) -> tuple[list[Detection], list]:
    """Each patient half's detections ``read`` with what ``fit_half`` made of the other half
    (cross-fitting: no image is read by a fit that saw it), and the two fits."""
    halves = [[i for i, r in enumerate(records) if half(r) == h] for h in (0, 1)]
    out, fits = list(detections), []
    for fitting, scoring_half in (halves, halves[::-1]):
        fits.append(fit_half([records[i] for i in fitting], [detections[i] for i in fitting]))
        for i in scoring_half:
            out[i] = read(detections[i], fits[-1])
    return out, fits


def cross_fitted(records: list[ImageRecord], detections: list[Detection], scored: dict) -> tuple[dict, list]:
    """Fold 4's figures with each half read at the bias fitted on the other, and both biases."""
    read, biases = cross_read(records, detections, lambda r, d: fit(r, d, scored), biased)
    return figures(records, read, scored), biases


def compare(fold4: Path, part2: Path) -> dict:
    records, detections, scored = loaded(fold4)
    unbiased = dict.fromkeys(BIASED, 0.0)
    stored = figures(records, [biased(d, unbiased) for d in detections], scored)
    if abs(stored["accuracy"] - accuracy(records, detections, scored, unbiased)) > 1e-9:
        raise SystemExit(f"{fold4}: the fit's accuracy differs from evaluate's")
    crossed, halves_bias = cross_fitted(records, detections, scored)
    whole = fit(records, detections, scored)
    other, other_detections, other_scored = loaded(part2)
    return {
        "fold4": {"stored": stored,
                  "cross-fitted": crossed, "biases": halves_bias},
        "part2": {"stored": figures(other, [biased(d, unbiased) for d in other_detections], other_scored),
                  "fold-4 bias": figures(other, [biased(d, whole) for d in other_detections], other_scored),
                  "bias": whole},
    }


FIGURES = ("accuracy", "kappa", "effort_ratio", "auc", "top_box_on_lesion", "table_ii_sen", "table_ii_spe")


def run_pairs(argv: list[str] | None, description: str, compare_pair: Callable[[Path, Path], dict],
              arms: dict[str, Sequence[str]]) -> int:
    """The command line of this script and of those reading kept reports its way (item 79's):
    reports in pairs (fold 4, then part2), each pair compared by ``compare_pair``; prints the
    figures of each set's ``arms`` as a table, then everything as JSON."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("reports", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if len(args.reports) % 2:
        parser.error("reports come in pairs: fold 4, then part2")
    results = {str(f): compare_pair(f, p) for f, p in zip(args.reports[::2], args.reports[1::2])}
    rows = [[name, data, arm, *(f"{r[data][arm][k]:.4f}" if r[data][arm].get(k) is not None else "n/a"
                                for k in FIGURES)]
            for name, r in results.items() for data, names in arms.items() for arm in names]
    print(tabulate(rows, ["fold-4 report", "set", "reading", *FIGURES], tablefmt="github"))
    print(json.dumps(results))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_pairs(argv, __doc__.splitlines()[0], compare,
                     {"fold4": ("stored", "cross-fitted"), "part2": ("stored", "fold-4 bias")})


if __name__ == "__main__":
    sys.exit(main())
