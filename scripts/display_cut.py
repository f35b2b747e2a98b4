"""Whether hiding a low-scoring pre-annotation saves the expert time: the most confident box shown
only where its score (``--by rank``: its rank value, what chose it as the top box; item 84) reaches
a cut (below it the expert draws from nothing instead of deleting a wrong box and drawing), the cut
fitted to the fewest expert-seconds on one report and scored on others (docs/results.md item 25).
Reads evaluation reports' kept detections (`birads evaluate --out REPORT`: REPORT/detections.jsonl);
runs no model. Then, for each report, where top1-only's seconds go, action by action, and the ratio
were every shown category right.

    python scripts/display_cut.py --fit REPORT --score REPORT [REPORT...] [--by rank] [--cuts C...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from model.evaluation import effort, metrics  # noqa: E402
from model.evaluation.evaluate import LOW_SCORE, displayed, on_classes  # noqa: E402
from model.evaluation.report import read_detections, scored_classes  # noqa: E402
from model.records import MATCH_IOU, Box, Detection  # noqa: E402

CUTS = [LOW_SCORE, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]  # LOW_SCORE: top1-only as served
BY = ("score", "rank")  # the value the cut reads: the box's score, or what ranked it top


def shown_above(detection: Detection, cut: float, by: str = "score") -> list[Box]:
    """top1-only's box where its score (``by`` rank: its rank value) reaches ``cut``, else nothing."""
    value = detection.rank_of if by == "rank" else (lambda box: box.score or 0.0)
    return [b for b in displayed(detection, 0.5, "top1-only") if value(b) >= cut]


def read(report: Path) -> tuple[list[list[Box]], list[Detection]]:
    """The expert boxes and the detections of a report, on the classes it was scored on."""
    pairs = read_detections(report)
    return on_classes([record for record, _ in pairs], [d for _, d in pairs], scored_classes(report))


def _ratio(truths: list[list[Box]], shown: list[list[Box]]) -> float | None:
    return effort.summary(truths, shown, effort.ActionCosts())["ratio"]


def ratios(truths: list[list[Box]], detections: list[Detection],
           cuts: list[float] = CUTS, by: str = "score") -> dict[float, float | None]:
    """Expert-seconds with pre-annotation against by hand, at each cut (the default action costs)."""
    return {cut: _ratio(truths, [shown_above(d, cut, by) for d in detections]) for cut in cuts}


def oracle_ratio(truths: list[list[Box]], detections: list[Detection]) -> float | None:
    """The bound on any cut: top1-only's box hidden exactly where it is off the lesion (IoU < 0.5)."""
    ious = metrics.top_box_ious(truths, [d.top() for d in detections])
    return _ratio(truths, [displayed(d, 0.5, "top1-only") if iou is not None and iou >= MATCH_IOU else []
                           for d, iou in zip(detections, ious)])


def by_action(truths: list[list[Box]], detections: list[Detection]) -> dict[str, float]:
    """top1-only's seconds per image, action by action (the default action costs), and the ratio
    with its relabels spared: the most the categories alone could save."""
    costs = effort.ActionCosts()
    shown = [displayed(d, 0.5, "top1-only") for d in detections]
    seconds = effort.seconds_by_action(truths, shown, costs)
    by_hand = sum(effort.by_hand_seconds(t, costs) for t in truths) / max(1, len(truths))
    return seconds | {"by_hand": by_hand, "ratio": sum(seconds.values()) / by_hand,
                      "ratio_categories_right": (sum(seconds.values()) - seconds["relabel"]) / by_hand}


def fitted_cut(by_cut: dict[float, float | None]) -> float:
    """The cut with the lowest ratio; a tie keeps the lowest cut (the box shown more often)."""
    return min((r, cut) for cut, r in by_cut.items() if r is not None)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", required=True, type=Path, help="the report the cut is fitted on")
    parser.add_argument("--score", nargs="+", required=True, type=Path, help="reports it is scored on")
    parser.add_argument("--by", choices=BY, default="score",
                        help="the value the cut reads: the top box's score, or its rank value (item 84)")
    parser.add_argument("--cuts", nargs="+", type=float, default=CUTS,
                        help="the cuts tried, the served top1-only's LOW_SCORE first (default %(default)s)")
    args = parser.parse_args(argv)
    cuts = sorted(set(args.cuts) | {LOW_SCORE})  # top1-only as served is always a column
    reports = [args.fit, *args.score]
    data = {report: read(report) for report in reports}   # each report read once
    table = {report: ratios(*data[report], cuts, args.by) for report in reports}
    cut = fitted_cut(table[args.fit])
    print(tabulate([[str(report), *(f"{table[report][c]:.3f}x" for c in cuts),
                     f"{oracle_ratio(*data[report]):.3f}x"] for report in reports],
                   [f"report (fit first), cut on the {args.by}", *(f">= {c:g}" for c in cuts), "oracle"],
                   tablefmt="github"))
    actions = {report: by_action(*data[report]) for report in reports}
    print(tabulate([[str(report), *(f"{actions[report][a]:.2f}" for a in effort.ACTIONS),
                     f"{actions[report]['by_hand']:.2f}", f"{actions[report]['ratio']:.3f}x",
                     f"{actions[report]['ratio_categories_right']:.3f}x"] for report in reports],
                   ["top1-only, s per image", *effort.ACTIONS, "by hand", "ratio",
                    "ratio, every category right"], tablefmt="github"))
    result = {"fitted_on": str(args.fit), "by": args.by, "cut": cut,
              "scored": {str(r): {"at_cut": table[r][cut], "top1_only": table[r][LOW_SCORE]} for r in args.score}}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
