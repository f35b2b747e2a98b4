"""Kept detections scored as stored and with every box tightened by the envelope the training's
rotations taught (docs/results.md item 55, which measured it and did not keep it: the product's
boxes stay as the detector gives them). Prints lesion AP50, the top box on a lesion, its size
against the expert box's and the expert-seconds ratio of top1-only. Reads evaluation reports' kept
detections (`birads evaluate --out REPORT`: REPORT/metrics.json and REPORT/detections.jsonl); runs
no model.

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

import numpy as np
from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from model.evaluation.evaluate import evaluate, on_classes  # noqa: E402
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


def size_ratios(expert_boxes: list[list[Box]], detections: list[Detection]) -> tuple[float, float]:
    """The medians of the top box's width and height over its nearest expert box's, where the two
    overlap at IoU > 0.3 (a box elsewhere says nothing of its size)."""
    widths, heights = [], []
    for boxes, detection in zip(expert_boxes, detections):
        top = detection.top()
        if top is None or not boxes:
            continue
        nearest = max(boxes, key=top.iou)
        if top.iou(nearest) > 0.3:
            widths.append(top.width / nearest.width)
            heights.append(top.height / nearest.height)
    return float(np.median(widths)), float(np.median(heights))


def figures(report: Path, degrees: float | None) -> dict:
    """The report's box figures, its boxes as stored (``degrees`` None) or tightened."""
    stored = read_metrics(report)
    pairs = read_detections(report)
    records = [record for record, _ in pairs]
    detections = [d if degrees is None else tightened_detection(d, degrees) for _, d in pairs]
    classes = scored_classes(report)
    m = evaluate(records, detections, classes, score_threshold=stored["score_threshold"],
                 decision=stored["decision"]).metrics
    width, height = size_ratios(*on_classes(records, detections, classes))
    return {"ap50_lesion": m["ap50_lesion"], "top_box_on_lesion": m["top_box"]["on_lesion"],
            "median_iou": m["top_box"]["median_iou"], "width_ratio": width, "height_ratio": height,
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
                         f"{f['median_iou']:.3f}", f"{f['width_ratio']:.3f} x {f['height_ratio']:.3f}",
                         f"{f['effort_top1_only']:.4f}x"])
    print(tabulate(rows, ["report", "boxes", "lesion AP50", "top box on a lesion", "top box median IoU",
                          "top box / expert box, width x height (median)", "effort, top1-only"],
                   tablefmt="github"))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
