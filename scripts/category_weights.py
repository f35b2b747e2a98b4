"""How much of the BI-RADS top-box accuracy a decision rule could win: the top box's category taken
as argmax_c w_c x P(c) over its class scores, with the weights w fitted to maximise accuracy on one
set of images and scored on another (docs/results.md item 22). Reads evaluation reports' kept
detections (`birads evaluate --out REPORT`: REPORT/detections.jsonl); runs no model.

    python scripts/category_weights.py --crossfit REPORT        fitted on half the patients, scored
                                                                 on the other half, both ways
    python scripts/category_weights.py --fit REPORT --score REPORT [REPORT...]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from model import taxonomy  # noqa: E402
from model.evaluation.evaluate import LOW_SCORE, image_decision, image_truth  # noqa: E402
from model.evaluation.report import read_detections, scored_classes  # noqa: E402
from model.records import Detection  # noqa: E402

GRID = [round(-2 + 0.1 * i, 1) for i in range(41)]  # log-weights
PASSES = 3

Image = tuple[str, str | None, dict[str, float] | None]  # truth, patient, the top box's class scores


def images(report: Path) -> list[Image]:
    classes = scored_classes(report)
    return [(image_truth(record, classes), record.patient, _top_scores(detection))
            for record, detection in read_detections(report)]


def _top_scores(detection: Detection) -> dict[str, float] | None:
    """The class scores of the box the image is classified by (None: no box kept, no lesion)."""
    if image_decision(detection, LOW_SCORE, "top") == taxonomy.NO_LESION or not detection.class_scores:
        return None
    return detection.class_scores[detection.boxes.index(detection.top())]


def decide(scores: dict[str, float] | None, log_weights: dict[str, float]) -> str:
    if scores is None:
        return taxonomy.NO_LESION
    return max(scores, key=lambda c: scores[c] * math.exp(log_weights.get(c, 0.0)))


def correct(rows: list[Image], log_weights: dict[str, float]) -> int:
    return sum(truth == decide(scores, log_weights) for truth, _, scores in rows)


def fit(rows: list[Image]) -> dict[str, float]:
    """Coordinate ascent over the grid; ties keep the weight nearest 1 (log 0)."""
    classes = sorted({c for _, _, s in rows if s for c in s})
    weights = dict.fromkeys(classes, 0.0)
    for _ in range(PASSES):
        for c in classes:
            weights[c] = max(GRID, key=lambda w: (correct(rows, {**weights, c: w}), -abs(w)))
    return weights


def crossfit(rows: list[Image], seed: int = 0) -> dict:
    patients = sorted({p or "" for _, p, _ in rows})
    random.Random(seed).shuffle(patients)
    half = set(patients[: len(patients) // 2])
    parts = [[r for r in rows if (r[1] or "") in half], [r for r in rows if (r[1] or "") not in half]]
    fitted = [fit(parts[0]), fit(parts[1])]
    won = correct(parts[1], fitted[0]) + correct(parts[0], fitted[1])
    return {"images": len(rows), "argmax": correct(rows, {}) / len(rows), "crossfit": won / len(rows),
            "weights": fitted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crossfit", type=Path, nargs="*", default=[])
    parser.add_argument("--fit", type=Path)
    parser.add_argument("--score", type=Path, nargs="*", default=[])
    args = parser.parse_args()
    for report in args.crossfit:
        print(json.dumps({"report": str(report), **crossfit(images(report))}))
    if args.fit:
        weights = fit(images(args.fit))
        for report in args.score:
            rows = images(report)
            print(json.dumps({"fitted_on": str(args.fit), "report": str(report), "images": len(rows),
                              "argmax": correct(rows, {}) / len(rows),
                              "weighted": correct(rows, weights) / len(rows), "weights": weights}))


if __name__ == "__main__":
    main()
