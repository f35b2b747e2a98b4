"""Other readings of the model's own outputs, with no training: each box's category read from its
class scores by argmax (served until item 26) or by their median in rank order (served since;
``model/category_reading.py``), and the image's malignancy from the top box's P(malignant) (as
served), a score-weighted mean over every kept box, the highest of the three most confident
(docs/results.md item 26), or the mean of the top box's P(malignant) and its categories' mass at 4
or above (item 45; at the head's weights 0.25 and 0.75 too, item 50; n/a on a report whose
detections were already read so, `--malignancy-reading mean`). Reads evaluation reports' kept
detections (`birads evaluate --out REPORT`: REPORT/detections.jsonl); runs no model.

    python scripts/top_box_reading.py REPORT [REPORT...]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from model import category_reading, malignancy_reading, taxonomy  # noqa: E402
from model.evaluation import effort, metrics  # noqa: E402
from model.evaluation import evaluate as served  # noqa: E402  (the rules the product serves)
from model.evaluation.report import malignancy_read_as, read_detections, scored_classes  # noqa: E402
from model.records import Detection  # noqa: E402


def weighted_malignancy(detection: Detection) -> float:
    weights = [b.score or 0.0 for b in detection.boxes]
    total = sum(weights)
    return sum(w * m for w, m in zip(weights, detection.malignancy)) / total if total else 0.0


def max3_malignancy(detection: Detection) -> float:
    ranked = sorted(zip(detection.boxes, detection.malignancy), key=lambda p: -(p[0].score or 0.0))
    return max((m for _, m in ranked[:3]), default=0.0)


def top_mean_malignancy(detection: Detection, head_weight: float = malignancy_reading.HEAD_WEIGHT) -> float:
    """The top box's P(malignant) read as ``mean`` (item 45): the box classifier's averaged with
    the box's class-score mass at BI-RADS 4 or above, the classifier's at ``head_weight``. Only for
    detections whose stored P(malignant) is the classifier's alone (``readings`` skips reports read
    with ``mean``: it would count the categories twice)."""
    return served.malignancy_score(malignancy_reading.reread(detection, "mean", head_weight))


# Each reading names the boxes; the served rules then decide the image's category (the top box's)
# and what the annotator is shown (top1-only).
CATEGORY_READINGS = list(category_reading.READINGS)
IMAGE_MALIGNANCY_READINGS: dict[str, Callable[[Detection], float]] = {
    "top": served.malignancy_score, "weighted": weighted_malignancy, "max3": max3_malignancy,
    "top-mean": top_mean_malignancy,
    **{f"top-mean-{w}": partial(top_mean_malignancy, head_weight=w) for w in (0.25, 0.75)}}  # item 50


def readings(report: Path) -> dict:
    """Accuracy, Cohen's kappa and expert effort (top1-only, default action costs) under each
    category reading; pathology AUC under each malignancy one."""
    classes = scored_classes(report)
    pairs = read_detections(report)
    records = [record for record, _ in pairs]
    expert_boxes, detections = served.on_classes(records, [d for _, d in pairs], classes)
    truth = [served.image_truth(r, classes) for r in records]
    labels = [taxonomy.NO_LESION, *classes]
    result: dict = {"images": len(records)}
    for name in CATEGORY_READINGS:
        named = [category_reading.relabelled(d, name) for d in detections]
        predicted = [served.image_decision(d, 0.5, "top") for d in named]
        shown = [served.displayed(d, 0.5, "top1-only") for d in named]
        result[name] = {"accuracy": sum(t == p for t, p in zip(truth, predicted)) / max(1, len(truth)),
                        "kappa": metrics.cohen_kappa(metrics.confusion_matrix(truth, predicted, labels)),
                        "effort": effort.summary(expert_boxes, shown, effort.ActionCosts())["ratio"]}
    # the images the reports' AUC ranks (BrEaST's normal image too, as not malignant; item 26 left it out)
    proven = [i for i, r in enumerate(records) if r.pathology]
    malignant = [records[i].pathology == "malignant" for i in proven]
    read_as = malignancy_read_as(report)
    for name, read in IMAGE_MALIGNANCY_READINGS.items():
        twice = name.startswith("top-mean") and read_as == "mean"  # its detections are already read so
        result[f"auc_{name}"] = None if twice else metrics.auc(malignant, [read(detections[i]) for i in proven])
    return result


def _cell(value: float | None, form: str) -> str:
    return "n/a" if value is None else format(value, form)


def _category_cell(reading: dict) -> str:
    return (f"{reading['accuracy']:.2%} (κ {_cell(reading['kappa'], '.3f')}, "
            f"effort {_cell(reading['effort'], '.3f')}x)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path)
    args = parser.parse_args(argv)
    results = {str(report): readings(report) for report in args.reports}
    print(tabulate([[report, r["images"],
                     *(_category_cell(r[c]) for c in CATEGORY_READINGS),
                     *(_cell(r[f"auc_{m}"], ".3f") for m in IMAGE_MALIGNANCY_READINGS)]
                    for report, r in results.items()],
                   ["report", "images", *(f"category by {c}" for c in CATEGORY_READINGS),
                    *(f"AUC, {m}" for m in IMAGE_MALIGNANCY_READINGS)], tablefmt="github"))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
