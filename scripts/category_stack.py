"""A stacked category reading of evaluation reports' kept detections (docs/results.md item 79):
each box's class scores and the box classifier's pathology head read together by a multinomial
logistic regression fitted on held-out images. Runs no model.

A box's features: the log of its class scores normalised to sum 1 and the logit of its pathology
head. The regression (L2: half the weights' squared norm added to the summed cross-entropy, on
features standardised over the fitting images) is fitted on each fitting image's top box against
the experts' image category. It gives every box a new category distribution, scaled to the box's
former sum (its P(lesion), rank and place stay), read as served (median category; P(malignant)
the mean of the pathology head and the new mass at 4 or above) or by argmax.

    python scripts/category_stack.py FOLD4_REPORT PART2_REPORT [FOLD4_REPORT PART2_REPORT ...]

Fold 4 is cross-fitted (patients split in two halves as in item 67, each scored with the other's
fit), and read in-sample too (the fit on all of fold 4 scoring its own images: an upper bound);
part2 read with the fit on all of fold 4.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from model.category_reading import SERVED_READING as SERVED_CATEGORY  # noqa: E402
from model.category_reading import relabelled  # noqa: E402
from model.evaluation.evaluate import _common_classes, image_truth  # noqa: E402
from model.malignancy_reading import SERVED_READING, reread  # noqa: E402
from model.records import Detection, ImageRecord  # noqa: E402
from scripts.category_bias import cross_read, loaded, run_pairs  # noqa: E402
from scripts.classifier_naming import figures  # noqa: E402

FLOOR = 1e-6  # a probability of 0 or 1 has no finite log or logit
L2 = 1.0      # sklearn's C = 1: the weights' squared norm halved, beside the summed cross-entropy
READINGS = (SERVED_CATEGORY, "argmax")  # the served naming first; the rule reads it


def box_features(scores: Mapping[str, float], head: float, classes: Sequence[str]) -> list[float]:
    """One box's features: log of its class scores over ``classes`` normalised to sum 1, then the
    logit of its pathology head."""
    total = sum(scores.get(c, 0.0) for c in classes) or 1.0
    head = min(max(head, FLOOR), 1 - FLOOR)
    return [math.log(max(scores.get(c, 0.0) / total, FLOOR)) for c in classes] + [math.log(head / (1 - head))]


@dataclass(frozen=True)
class Stack:
    """A fitted reading: standardisation and a softmax layer from box features to ``classes``."""

    classes: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray  # classes x features
    offsets: np.ndarray  # classes

    def distribution(self, features: Sequence[float]) -> dict[str, float]:
        logits = self.weights @ ((np.asarray(features) - self.mean) / self.scale) + self.offsets
        p = np.exp(logits - logits.max())
        return dict(zip(self.classes, (p / p.sum()).tolist()))


def fit_stack(features: np.ndarray, truth: Sequence[str], classes: Sequence[str]) -> Stack:
    """The regression fitted by L-BFGS in float64 (deterministic: no sampling)."""
    mean, scale = features.mean(axis=0), features.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    x = torch.tensor((features - mean) / scale, dtype=torch.float64)
    y = torch.tensor([list(classes).index(t) for t in truth])
    w = torch.zeros(len(classes), x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=500, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = torch.nn.functional.cross_entropy(x @ w.T + b, y, reduction="sum") + L2 / 2 * (w ** 2).sum()
        value.backward()
        return value

    optimizer.step(loss)
    return Stack(tuple(classes), mean, scale, w.detach().numpy(), b.detach().numpy())


def _check_heads(detection: Detection) -> None:
    if len(detection.malignancy) != len(detection.class_scores):
        raise SystemExit("a report without the box classifier's P(malignant) on every box: nothing to stack")


def _top_features(records: list[ImageRecord], detections: list[Detection],
                  classes: list[str]) -> tuple[np.ndarray, list[str]]:
    """Each fitting image's top box's features and the experts' category (images whose top box has
    no class scores, or whose category the model has not, are left out)."""
    rows, truth = [], []
    for record, detection in zip(records, detections):
        top, category = detection.top(), image_truth(record, classes)
        if top is None or not detection.class_scores or category not in classes:
            continue
        _check_heads(detection)
        i = detection.boxes.index(top)
        rows.append(box_features(detection.class_scores[i], detection.malignancy[i], classes))
        truth.append(category)
    return np.array(rows), truth


def restacked(detection: Detection, stack: Stack | None) -> Detection:
    """``detection`` with each box's class scores from ``stack`` (None: as kept), read as served
    (``relabelled`` names the boxes another way)."""
    if stack is not None and detection.class_scores:
        _check_heads(detection)
        scores = tuple({c: p * sum(kept.values()) for c, p in stack.distribution(
            box_features(kept, head, stack.classes)).items()}
            for kept, head in zip(detection.class_scores, detection.malignancy))
        detection = replace(detection, class_scores=scores)
    return relabelled(reread(detection, SERVED_READING), SERVED_CATEGORY)


def fitted(records: list[ImageRecord], detections: list[Detection], scored: dict) -> Stack:
    """The stack fitted on these images' top boxes, over the model's own classes."""
    classes = _common_classes(records, scored["classes"])
    if classes != list(scored["classes"]):  # 4A/4B/4C scores read on plain 4 data would be dropped
        raise SystemExit(f"the data's categories do not meet the model's classes {scored['classes']}")
    return fit_stack(*_top_features(records, detections, classes), classes)


def compare(fold4: Path, part2: Path) -> dict:
    records, detections, scored = loaded(fold4)
    other, other_detections, other_scored = loaded(part2)
    whole = fitted(records, detections, scored)
    # fold 4 cross-fitted, and in-sample: fitted on the images it scores, an upper bound no product would see
    crossed, _ = cross_read(records, detections, lambda r, d: fitted(r, d, scored), restacked)
    in_sample = [restacked(d, whole) for d in detections]
    moved = [restacked(d, whole) for d in other_detections]
    result = {"fold4": {"stored": figures(records, [restacked(d, None) for d in detections], scored)},
              "part2": {"stored": figures(other, [restacked(d, None) for d in other_detections], other_scored)}}
    for reading in READINGS:
        result["fold4"][f"cross-fitted, {reading}"] = figures(records, named(crossed, reading), scored)
        result["fold4"][f"in-sample, {reading}"] = figures(records, named(in_sample, reading), scored)
        result["part2"][f"fold-4 fit, {reading}"] = figures(other, named(moved, reading), other_scored)
    result["fold-4 fit"] = {"classes": whole.classes, "weights": whole.weights.round(3).tolist(),
                            "offsets": whole.offsets.round(3).tolist()}
    return result


def named(detections: list[Detection], reading: str) -> list[Detection]:
    return [relabelled(d, reading) for d in detections]


def main(argv: list[str] | None = None) -> int:
    fold4 = ("stored", *(f"{fit}, {reading}" for reading in READINGS for fit in ("cross-fitted", "in-sample")))
    return run_pairs(argv, __doc__.splitlines()[0], compare,
                     {"fold4": fold4, "part2": ("stored", *(f"fold-4 fit, {reading}" for reading in READINGS))})


if __name__ == "__main__":
    sys.exit(main())
