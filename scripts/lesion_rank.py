"""Boxes ranked by the detector's P(lesion) (1 - background: the sum of its class scores) in place of
its score (the probability of the box's own category), re-read on evaluation reports' kept
detections and scored as each report was (docs/results.md item 63). Runs no model.

With a box classifier (the report's detections carry ranks), each box's classifier P(lesion) is
recovered from its stored rank and score (rank = score^(1-W) x P^W, W the classifier's ``rescore``)
and its rank becomes mass^(1-W) x P^W. Without one (ranks empty: the rank is the score) the rank
becomes the mass, ties (one proposal's per-category boxes share a softmax) broken by the score.
Each box keeps its place, score, category and P(malignant), read as served where the report was not.
The ``place`` arm (item 64) ranks so too, and where the stored top box lies on the new top box
(``ON_SHARE`` of its area inside it) the new top box takes its category, class scores and P(malignant).

    python scripts/lesion_rank.py [--rescore 0.5] REPORT [REPORT...]

A REPORT is a directory with ``metrics.json`` and ``detections.jsonl`` (``birads evaluate --out``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from model.evaluation.report import read_served_detections  # noqa: E402
from model.records import Box, Detection  # noqa: E402
from scripts.classifier_naming import figures, scoring  # noqa: E402

ON_SHARE = 0.5  # the stored top box "lies on" the new one with this share of its area inside it
TIE_BREAK = 1e-6  # the score's share where ranks tie: below any difference the masses show (bf16 softmax)


def lesion_mass(class_scores: dict[str, float]) -> float:
    """The detector's P(lesion): its softmax's mass off the background column."""
    return sum(class_scores.values())


def classifier_lesion(rank: float, score: float, rescore: float) -> float:
    """The box classifier's P(lesion) behind a stored rank = score^(1-W) x P^W."""
    if rank <= 0.0:
        return 0.0
    return min(1.0, (rank / score ** (1 - rescore)) ** (1 / rescore))


def ranked_by_mass(detection: Detection, rescore: float) -> Detection:
    """``detection`` with each box's rank re-made from its detector P(lesion) (module docstring)."""
    if not detection.boxes:
        return detection
    masses = [lesion_mass(scores) for scores in detection.class_scores]
    if detection.ranks:
        ranks = [mass ** (1 - rescore) * classifier_lesion(rank, box.score or 0.0, rescore) ** rescore
                 for mass, rank, box in zip(masses, detection.ranks, detection.boxes)]
    else:
        ranks = [mass + TIE_BREAK * (box.score or 0.0) for mass, box in zip(masses, detection.boxes)]
    return replace(detection, ranks=tuple(ranks))


def inside_share(inner: Box, outer: Box) -> float:
    """The share of ``inner``'s area that lies inside ``outer``."""
    return inner.intersection(outer) / inner.area if inner.area > 0 else 0.0


def placed_by_mass(detection: Detection, rescore: float) -> Detection:
    """``ranked_by_mass``, its top box read as the stored top box where that lies on it (item 64)."""
    ranked = ranked_by_mass(detection, rescore)
    served_top, top = detection.top(), ranked.top()
    if top is None or top == served_top or inside_share(served_top, top) < ON_SHARE:
        return ranked
    new, old = ranked.boxes.index(top), detection.boxes.index(served_top)

    def taken(values: tuple) -> tuple:  # per-box tuples may be empty (no box classifier)
        return tuple(values[old] if i == new else v for i, v in enumerate(values)) if values else values

    boxes = tuple(replace(b, category=served_top.category) if i == new else b for i, b in enumerate(ranked.boxes))
    return replace(ranked, boxes=boxes, class_scores=taken(ranked.class_scores), malignancy=taken(ranked.malignancy))


def compare(report: Path, rescore: float) -> dict[str, dict]:
    """The report's figures under each arm: its stored ranks, ranks by the detector's P(lesion)
    (item 63), and those with the top box read as the stored one on it (item 64)."""
    pairs = read_served_detections(report)
    records = [record for record, _ in pairs]
    stored = [detection for _, detection in pairs]
    scored = scoring(report)
    return {arm: figures(records, [read(detection, rescore) for detection in stored], scored)
            for arm, read in ARMS.items()}


ARMS = {"stored": lambda detection, _: detection, "mass": ranked_by_mass, "place": placed_by_mass}


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


FIGURES = ("top_box_on_lesion", "effort_ratio", "auc", "ap50_lesion", "accuracy",
           "table_ii_sen", "table_ii_spe", "table_ii_balanced")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--rescore", type=float, default=0.5,
                        help="the box classifier's share W of the stored ranks (the recipe's RESCORE)")
    args = parser.parse_args(argv)
    results = {str(report): compare(report, args.rescore) for report in args.reports}
    rows = [[report, arm, *(_cell(r[arm][f]) for f in FIGURES)]
            for report, r in results.items() for arm in ARMS]
    print(tabulate(rows, ["report", "rank", *FIGURES], tablefmt="github"))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
