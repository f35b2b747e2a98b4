"""Which parent classes a fine-tuned detector's classes start from (model.class_rows); the rows
themselves are checked on real trained models in tests/model/test_training.py."""

import pytest

from model.class_rows import parent_classes_of

COARSE = ["2", "3", "4", "5"]
FINE = ["2", "3", "4A", "4B", "4C", "5"]


def test_the_second_model_keeps_its_parents_2_3_and_5():
    assert parent_classes_of(COARSE, ["2", "3", "5"]) == {"2": ["2"], "3": ["3"], "5": ["5"]}


def test_subcategories_of_4_start_as_the_parents_4():
    assert parent_classes_of(COARSE, FINE) == {"2": ["2"], "3": ["3"], "4A": ["4"], "4B": ["4"],
                                               "4C": ["4"], "5": ["5"]}


def test_plain_4_starts_as_the_mean_of_the_parents_subcategories():
    assert parent_classes_of(FINE, COARSE)["4"] == ["4A", "4B", "4C"]


def test_a_class_the_parent_never_had_keeps_its_random_rows():
    assert parent_classes_of(["2", "3", "5"], COARSE) == {"2": ["2"], "3": ["3"], "5": ["5"]}


def test_split_or_merged_classes_keep_the_parents_share_of_the_softmax():
    """4A, 4B and 4C copied from the parent's 4 would together hold three times its share (and
    draw the median reading and P(malignant) up): each takes log 3 off its bias, so the three hold
    what 4 held; 4 merged from 4A/4B/4C adds log 3 back."""
    import math

    import torch

    from model.class_rows import _copy_rows, _keep_shares

    parent_bias = torch.tensor([0.2, -0.1, 0.7, 0.4])  # 2, 3, 4, 5 (the background row is kept apart)
    features_logit = torch.tensor([1.0, 0.5, 2.0, -1.0])  # the same weights, so the same feature terms
    rows = {0: [0], 1: [1], 2: [2], 3: [2], 4: [2], 5: [3]}  # 2, 3, 4A, 4B, 4C, 5 <- the parent's rows
    bias = torch.zeros(6)
    _copy_rows(bias, parent_bias, rows, 1)
    _keep_shares(bias, rows)
    parent_p = torch.softmax(parent_bias + features_logit, 0)
    child_p = torch.softmax(bias + features_logit[[0, 1, 2, 2, 2, 3]], 0)
    assert child_p[2:5].sum().item() == pytest.approx(parent_p[2].item())
    assert child_p[[0, 1, 5]].tolist() == pytest.approx(parent_p[[0, 1, 3]].tolist())
    merged = torch.zeros(4)
    back = {0: [0], 1: [1], 2: [2, 3, 4], 3: [5]}
    _copy_rows(merged, bias, back, 1)
    _keep_shares(merged, back)
    assert merged.tolist() == pytest.approx(parent_bias.tolist())
    assert math.isclose(bias[2].item(), 0.7 - math.log(3), rel_tol=1e-6)
