"""Metric arithmetic, free of detectron2: the paper's tables, confusion matrices, AUC, box AP.

``binary`` reproduces the paper's own numbers: Table II (TP 88, FN 2, FP 17, TN 893 ->
98.10 / 97.78 / 98.13 %) and Table III (1127, 19, 121, 569 -> 92.37 / 98.34 / 82.46 %).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np

from model.evaluation import corrections
from model.records import MATCH_IOU, Box


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def binary(tp: int, fn: int, fp: int, tn: int) -> dict:
    """Accuracy, sensitivity (recall of positives), specificity (recall of negatives), counts."""
    return {"accuracy": _ratio(tp + tn, tp + fn + fp + tn), "sensitivity": _ratio(tp, tp + fn),
            "specificity": _ratio(tn, tn + fp), "tp": tp, "fn": fn, "fp": fp, "tn": tn,
            "n": tp + fn + fp + tn}


def binary_from_labels(truth: Sequence[bool], predicted: Sequence[bool]) -> dict:
    truth_arr, pred_arr = np.asarray(truth, bool), np.asarray(predicted, bool)
    return binary(tp=int(np.sum(truth_arr & pred_arr)), fn=int(np.sum(truth_arr & ~pred_arr)),
                  fp=int(np.sum(~truth_arr & pred_arr)), tn=int(np.sum(~truth_arr & ~pred_arr)))


def confusion_matrix(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> list[list[int]]:
    """Rows: the experts' category; columns: the model's."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=int)
    for t, p in zip(truth, predicted):
        matrix[index[t], index[p]] += 1
    return matrix.tolist()


def one_vs_rest(matrix: list[list[int]], labels: Sequence[str]) -> dict[str, dict]:
    """The paper's Table I: per category accuracy, sensitivity, specificity and support."""
    m = np.asarray(matrix)
    total = int(m.sum())
    result = {}
    for i, label in enumerate(labels):
        tp = int(m[i, i])
        fn = int(m[i].sum()) - tp
        fp = int(m[:, i].sum()) - tp
        stats = binary(tp, fn, fp, total - tp - fn - fp)
        result[label] = {"accuracy": stats["accuracy"], "sensitivity": stats["sensitivity"],
                         "specificity": stats["specificity"], "support": tp + fn}
    return result


def cohen_kappa(matrix: list[list[int]]) -> float | None:
    """Agreement beyond chance between the experts' categories (rows) and the model's (columns),
    the statistic reader studies give for two radiologists reading the same images; None where
    chance alone agrees fully (one category on both sides) or there is nothing to agree on."""
    m = np.asarray(matrix, float)
    total = m.sum()
    if not total:
        return None
    observed = np.trace(m) / total
    chance = float((m.sum(axis=1) * m.sum(axis=0)).sum()) / total ** 2
    return None if chance == 1 else float((observed - chance) / (1 - chance))


def auc(truth: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); None without both classes."""
    truth_arr, score_arr = np.asarray(truth, bool), np.asarray(scores, float)
    positives, negatives = score_arr[truth_arr], score_arr[~truth_arr]
    if len(positives) == 0 or len(negatives) == 0:
        return None
    greater = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(positives) * len(negatives)))


def accepted(expert: Sequence[Box], predicted: Sequence[Box]) -> bool:
    """Would an expert accept this pre-annotation unchanged? Nothing to correct under the simulated
    expert's pairing (``model.evaluation.corrections``): every expert box fitted (IoU >= 0.5) by a
    rightly named box of its own, and no box left over."""
    return len(expert) == len(predicted) and corrections.count(expert, predicted).total == 0


# Where the most confident box lands, by its IoU with the nearest expert box: on the lesion (at
# MATCH_IOU, the AP50 criterion and the corrections' match), near it (a box to adjust), or elsewhere
# (not a near miss: the effort's simulated expert still moves it where that is cheaper than deleting
# it and drawing one, as a box of about the lesion's size a little beside it often is).
NEAR_IOU = 0.3


def top_box_ious(expert: Sequence[Sequence[Box]], top: Sequence[Box | None]) -> list[float | None]:
    """Per image, the IoU of its most confident box (``top``, None where the model gave none: 0) with
    the nearest expert box; None for an image without expert boxes."""
    return [(max(box.iou(t) for box in boxes) if t is not None else 0.0) if boxes else None
            for boxes, t in zip(expert, top)]


def top_box_localisation(expert: Sequence[Sequence[Box]], top: Sequence[Box | None]) -> dict:
    """On images with an expert box: the shares whose most confident box (``top``, None where the
    model gave none) is on a lesion (IoU >= MATCH_IOU), near one (>= NEAR_IOU) or elsewhere/absent, and
    the median IoU (absent counts 0). Tells a box that needs adjusting from a lesion not found."""
    ious = [iou for iou in top_box_ious(expert, top) if iou is not None]
    if not ious:
        return {"images": 0, "on_lesion": None, "near": None, "elsewhere": None, "median_iou": None}
    values = np.asarray(ious)
    return {"images": len(ious), "on_lesion": float((values >= MATCH_IOU).mean()),
            "near": float(((values >= NEAR_IOU) & (values < MATCH_IOU)).mean()),
            "elsewhere": float((values < NEAR_IOU).mean()), "median_iou": float(np.median(values))}


def box_ap(expert: Sequence[Sequence[Box]], predicted: Sequence[Sequence[Box]],
           classes: Sequence[str], scored: Sequence[str] | None = None) -> dict:
    """COCO box AP (IoU .50:.95) and AP50 with pycocotools, averaged over ``scored`` (default: all
    of ``classes``, the categories the boxes may carry); -1 when undefined."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    category_id = {name: i + 1 for i, name in enumerate(classes)}
    images, annotations, results = [], [], []
    for image_id, (truth, found) in enumerate(zip(expert, predicted), start=1):
        images.append({"id": image_id, "width": 1, "height": 1})
        for box in truth:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": category_id[box.category], "iscrowd": 0,
                                "bbox": [box.x0, box.y0, box.width, box.height], "area": box.area})
        results += [{"image_id": image_id, "category_id": category_id[b.category],
                     "bbox": [b.x0, b.y0, b.width, b.height], "score": b.score} for b in found]
    if not annotations:
        return {"ap": -1.0, "ap50": -1.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its tables
        truth_api = COCO()
        truth_api.dataset = {"images": images, "annotations": annotations,
                             "categories": [{"id": i, "name": n} for n, i in category_id.items()]}
        truth_api.createIndex()
        if not results:  # nothing found: 0 where a scored class has expert boxes, else undefined as above
            has_truth = scored is None or any(a["category_id"] in {category_id[n] for n in scored} for a in annotations)
            return {"ap": 0.0, "ap50": 0.0} if has_truth else {"ap": -1.0, "ap50": -1.0}
        evaluation = COCOeval(truth_api, truth_api.loadRes(results), "bbox")
        if scored is not None:
            evaluation.params.catIds = [category_id[name] for name in scored]
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {"ap": float(evaluation.stats[0]), "ap50": float(evaluation.stats[1])}
