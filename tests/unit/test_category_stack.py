"""scripts/category_stack.py: class scores and the pathology head read together by a fitted
regression, on kept detections; no model run."""

import numpy as np
import pytest

from model.records import Box, Detection
from tests.scripts import load_script

CLASSES = ("2", "3", "4", "5")


@pytest.fixture(scope="module")
def category_stack():
    return load_script("category_stack")


def _detection(scores: dict[str, float], head: float) -> Detection:
    return Detection((Box(10, 10, 50, 50, "4", 0.6),), 100, 100, class_scores=(scores,), malignancy=(head,),
                     ranks=(0.5,))


def test_features_are_normalised_log_scores_and_the_heads_logit(category_stack):
    features = category_stack.box_features({"2": 0.1, "3": 0.1, "4": 0.4, "5": 0.2}, 0.5, CLASSES)
    assert features == pytest.approx([np.log(1 / 8), np.log(1 / 8), np.log(1 / 2), np.log(1 / 4), 0.0])
    assert np.isfinite(category_stack.box_features({"2": 0.0, "3": 0.0, "4": 1.0, "5": 0.0}, 1.0, CLASSES)).all()


def test_the_head_renames_boxes_the_class_scores_cannot_separate(category_stack):
    # Every box's class scores say 4; the truth follows the pathology head: low 3, middle 4, high 5.
    scores = {"2": 0.1, "3": 0.2, "4": 0.5, "5": 0.2}
    heads = [0.05, 0.1, 0.15, 0.45, 0.5, 0.55, 0.85, 0.9, 0.95] * 4
    truth = (["3"] * 3 + ["4"] * 3 + ["5"] * 3) * 4
    features = np.array([category_stack.box_features(scores, h, CLASSES) for h in heads])
    stack = category_stack.fit_stack(features, truth, CLASSES)
    named = [category_stack.named([category_stack.restacked(_detection(scores, h), stack)], "argmax")[0]
             .boxes[0].category for h in (0.05, 0.5, 0.95)]
    assert named == ["3", "4", "5"]
    # as kept (no stack), the box stays a 4 whatever its head says
    kept = category_stack.restacked(_detection(scores, 0.95), None)
    assert category_stack.named([kept], "argmax")[0].boxes[0].category == "4"


def test_a_restacked_box_keeps_its_lesion_mass_place_and_rank(category_stack):
    scores = {"2": 0.1, "3": 0.2, "4": 0.4, "5": 0.2}  # background 0.1
    features = np.array([category_stack.box_features(scores, h, CLASSES) for h in (0.1, 0.9)] * 3)
    stack = category_stack.fit_stack(features, ["2", "5"] * 3, CLASSES)
    read = category_stack.restacked(_detection(scores, 0.9), stack)
    assert sum(read.class_scores[0].values()) == pytest.approx(0.9)
    assert (read.boxes[0].score, read.ranks, read.boxes[0].x0) == (0.6, (0.5,), 10)
    # served P(malignant): half the pathology head, half the new mass at 4 or above
    mass = read.class_scores[0]["4"] + read.class_scores[0]["5"]
    assert read.malignancy[0] == pytest.approx(0.5 * 0.9 + 0.5 * mass)
