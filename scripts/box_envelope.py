"""Kept detections scored as stored and with every box tightened by the envelope the training's
rotations taught (docs/results.md item 55, which measured it and did not keep it: the product's
boxes stay as the detector gives them). Prints lesion AP50, the top box on a lesion and the
expert-seconds ratio of top1-only. Reads evaluation reports' kept detections (`birads evaluate
--out REPORT`: REPORT/metrics.json and REPORT/detections.jsonl); runs no model.

    python scripts/box_envelope.py --degrees 10 REPORT [REPORT...]

Training rotates each image by an angle t drawn uniformly in +-R degrees (``model.augment``), and
detectron2 replaces each rotated box by the axis-aligned box around its rotated corners. For a
lesion w wide and h tall that envelope is ``w cos t + h |sin t|`` wide and ``w |sin t| + h cos t``
tall, so the box regression learns boxes larger than the lesion, while experts draw tight ones.
Averaged over the angles, ``W = c w + s h`` and ``H = s w + c h`` with ``c = sin(R) / R`` and
``s = (1 - cos R) / R``; solving for ``w`` and ``h`` gives the tight box, about the same centre.
Nothing is fitted: R is the model's own training setting.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from model.evaluation.evaluate import evaluate  # noqa: E402
from model.evaluation.report import read_detections, read_metrics, scored_classes  # noqa: E402
from model.records import Box, Detection  # noqa: E402


def envelope_factors(degrees: float) -> tuple[float, float]:
    """``(c, s)``: the means of ``cos t`` and ``|sin t|`` for ``t`` uniform in +-``degrees``."""
    radians = math.radians(degrees)
    if radians <= 0:
        return 1.0, 0.0
    return math.sin(radians) / radians, (1.0 - math.cos(radians)) / radians


def tightened(box: Box, degrees: float) -> Box:
    """``box`` read as the mean envelope of a tight box under rotations of +-``degrees``: that tight
    box, about the same centre. A box too elongated to be such an envelope is returned as it is."""
    c, s = envelope_factors(degrees)
    determinant = c * c - s * s
    width = (c * box.width - s * box.height) / determinant
    height = (c * box.height - s * box.width) / determinant
    if width <= 0 or height <= 0:
        return box
    cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    return replace(box, x0=cx - width / 2, y0=cy - height / 2, x1=cx + width / 2, y1=cy + height / 2)


def tightened_detection(detection: Detection, degrees: float) -> Detection:
    """Every box of ``detection`` tightened; categories, scores and P(malignant) unchanged."""
    return replace(detection, boxes=tuple(tightened(box, degrees) for box in detection.boxes))


def figures(report: Path, degrees: float | None) -> dict:
    """The report's box figures, its boxes as stored (``degrees`` None) or tightened."""
    stored = read_metrics(report)
    pairs = read_detections(report)
    records = [record for record, _ in pairs]
    detections = [d if degrees is None else tightened_detection(d, degrees) for _, d in pairs]
    m = evaluate(records, detections, scored_classes(report), score_threshold=stored["score_threshold"],
                 decision=stored["decision"]).metrics
    return {"ap50_lesion": m["ap50_lesion"], "top_box_on_lesion": m["top_box"]["on_lesion"],
            "median_iou": m["top_box"]["median_iou"],
            "effort_top1_only": m["effort"]["displays"]["top1-only"]["ratio"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--degrees", type=float, required=True,
                        help="the rotation range the reports' model trained with (model.json settings)")
    parser.add_argument("reports", nargs="+", type=Path)
    args = parser.parse_args(argv)
    results = {str(r): {"stored": figures(r, None), "tightened": figures(r, args.degrees)} for r in args.reports}
    rows = []
    for report, pair in results.items():
        for name, f in pair.items():
            rows.append([report, name, f"{f['ap50_lesion']:.4f}", f"{f['top_box_on_lesion']:.2%}",
                         f"{f['median_iou']:.3f}", f"{f['effort_top1_only']:.4f}x"])
    print(tabulate(rows, ["report", "boxes", "lesion AP50", "top box on a lesion", "top box median IoU",
                          "effort, top1-only"], tablefmt="github"))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
