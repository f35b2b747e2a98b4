"""Metric arithmetic, with the paper's own tables as oracles."""

import pytest

from model.evaluation import metrics
from model.records import Box


def _pct(x):
    return round(100 * x, 2)


def test_reproduces_paper_table_ii_screening():
    stats = metrics.binary(tp=88, fn=2, fp=17, tn=893)
    assert (_pct(stats["accuracy"]), _pct(stats["sensitivity"]), _pct(stats["specificity"])) == \
        (98.10, 97.78, 98.13)


def test_reproduces_paper_table_iii_4a_vs_4b():
    stats = metrics.binary(tp=1127, fn=19, fp=121, tn=569)
    assert (_pct(stats["accuracy"]), _pct(stats["sensitivity"]), _pct(stats["specificity"])) == \
        (92.37, 98.34, 82.46)


def test_binary_undefined_ratios_are_none():
    assert metrics.binary(0, 0, 3, 5)["sensitivity"] is None


def test_binary_from_labels_counts():
    stats = metrics.binary_from_labels([True, True, False, False, False], [True, False, True, False, False])
    assert (stats["tp"], stats["fn"], stats["fp"], stats["tn"]) == (1, 1, 1, 2)


def test_confusion_matrix_and_one_vs_rest():
    labels = ["1", "2", "5"]
    matrix = metrics.confusion_matrix(["1", "2", "2", "5", "5"], ["1", "2", "5", "5", "2"], labels)
    assert matrix == [[1, 0, 0], [0, 1, 1], [0, 1, 1]]
    per = metrics.one_vs_rest(matrix, labels)
    assert per["2"] == {"accuracy": 3 / 5, "sensitivity": 1 / 2, "specificity": 2 / 3, "support": 2}
    assert per["1"]["sensitivity"] == 1.0 and per["1"]["support"] == 1


def test_cohen_kappa_corrects_agreement_for_chance():
    # 70 % agreement where both sides' shares alone agree 50 % of the time: kappa 0.4
    assert metrics.cohen_kappa([[20, 5], [10, 15]]) == pytest.approx(0.4)
    assert metrics.cohen_kappa([[3, 0, 0], [0, 4, 0], [0, 0, 5]]) == pytest.approx(1.0)
    # always the majority category: right most of the time, no agreement beyond chance
    assert metrics.cohen_kappa([[0, 30], [0, 70]]) == pytest.approx(0.0)
    assert metrics.cohen_kappa([[5]]) is None and metrics.cohen_kappa([[0, 0], [0, 0]]) is None


def test_auc_perfect_random_and_ties():
    assert metrics.auc([True, True, False], [0.9, 0.8, 0.1]) == 1.0
    assert metrics.auc([True, False], [0.5, 0.5]) == 0.5
    assert metrics.auc([True, False, False, True], [0.2, 0.9, 0.1, 0.8]) == 0.5
    assert metrics.auc([True, True], [0.1, 0.2]) is None


def test_acceptance_needs_every_box_matched_same_category_and_nothing_extra():
    expert = [Box(10, 10, 50, 50, "3")]
    assert metrics.accepted(expert, [Box(12, 11, 52, 49, "3", 0.9)])
    assert not metrics.accepted(expert, [Box(12, 11, 52, 49, "4", 0.9)])        # relabel needed
    assert not metrics.accepted(expert, [Box(40, 40, 90, 90, "3", 0.9)])        # moved
    assert not metrics.accepted(expert, [Box(12, 11, 52, 49, "3", 0.9), Box(60, 60, 70, 70, "2", 0.6)])
    assert not metrics.accepted(expert, [])
    assert metrics.accepted([], [])                                            # no lesion, none shown


def test_box_ap_perfect_and_wrong_class():
    truth = [[Box(10, 10, 50, 50, "3")], [Box(5, 5, 30, 40, "5")]]
    perfect = [[Box(10, 10, 50, 50, "3", 0.9)], [Box(5, 5, 30, 40, "5", 0.8)]]
    assert metrics.box_ap(truth, perfect, ["3", "5"]) == pytest.approx({"ap": 1.0, "ap50": 1.0})
    swapped = [[Box(10, 10, 50, 50, "5", 0.9)], [Box(5, 5, 30, 40, "3", 0.8)]]
    assert metrics.box_ap(truth, swapped, ["3", "5"])["ap50"] == 0.0
    assert metrics.box_ap(truth, [[], []], ["3", "5"]) == {"ap": 0.0, "ap50": 0.0}
    # scored classes without an expert box: undefined with no detection as with one (pycocotools' -1)
    assert metrics.box_ap(truth, [[], []], ["2", "3", "5"], scored=["2"]) == {"ap": -1.0, "ap50": -1.0}
    one = [[Box(10, 10, 50, 50, "2", 0.9)], []]
    assert metrics.box_ap(truth, one, ["2", "3", "5"], scored=["2"]) == {"ap": -1.0, "ap50": -1.0}


def test_top_box_localisation_tells_on_near_and_elsewhere_apart():
    lesion = Box(0, 0, 100, 100, "4")
    expert = [[lesion], [lesion], [lesion], [lesion], []]
    top = [Box(0, 0, 100, 80, "2", 0.9),     # IoU 0.8: on the lesion, whatever its category
           Box(0, 0, 100, 40, "4", 0.9),     # IoU 0.4: near it, a box to adjust
           Box(200, 200, 300, 300, "4", 0.9),  # elsewhere
           None,                              # no box at all counts as elsewhere, IoU 0
           Box(0, 0, 10, 10, "4", 0.9)]       # an image without a lesion is not counted
    found = metrics.top_box_localisation(expert, top)
    assert found == {"images": 4, "on_lesion": 0.25, "near": 0.25, "elsewhere": 0.5,
                     "median_iou": pytest.approx(0.2)}
    assert metrics.top_box_localisation([[]], [None])["on_lesion"] is None
