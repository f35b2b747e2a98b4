"""The simulated expert's corrections on hand-made cases, and agreement with the acceptance rule."""

import pytest

from model.evaluation import metrics
from model.evaluation.corrections import Corrections, count
from model.records import Box

LESION = Box(10, 10, 50, 50, "3")


@pytest.mark.parametrize("predicted, expected", [
    ([Box(11, 10, 51, 49, "3", 0.9)], Corrections()),                               # accepted as is
    ([Box(11, 10, 51, 49, "4", 0.9)], Corrections(relabelled=1)),                   # relabel
    ([Box(30, 30, 70, 70, "3", 0.9)], Corrections(moved=1)),                        # IoU < 0.5: move
    ([Box(30, 30, 70, 70, "5", 0.9)], Corrections(moved=1, moved_relabelled=1)),    # move + relabel: one
    ([], Corrections(added=1)),                                                     # missed lesion
    ([Box(200, 200, 220, 220, "2", 0.8)], Corrections(added=1, deleted=1)),         # far away: delete + draw
    ([Box(11, 10, 51, 49, "3", 0.9), Box(60, 60, 80, 80, "2", 0.6)], Corrections(deleted=1)),
])
def test_single_lesion_cases(predicted, expected):
    found = count([LESION], predicted)
    assert found == expected
    assert (found.total == 0) == metrics.accepted([LESION], predicted)


def test_no_lesion_image_and_two_lesions():
    assert count([], []) == Corrections() and count([], [LESION]).deleted == 1
    second = Box(100, 100, 140, 130, "5")
    found = count([LESION, second], [Box(101, 99, 141, 131, "5", 0.9), Box(12, 12, 48, 52, "2", 0.7)])
    assert found == Corrections(relabelled=1) and found.total == 1


def test_of_two_boxes_on_one_lesion_the_rightly_named_one_is_kept():
    """Both halves overlap the lesion at IoU 0.55, the wrongly named one a hair more: the expert
    deletes it and keeps the other, rather than relabel it and delete the right one."""
    truth = Box(0, 0, 10, 10, "3")
    wrong, right = Box(0, 0, 10, 5.55, "5", 0.9), Box(0, 4.5, 10, 10, "3", 0.8)
    assert truth.iou(wrong) > truth.iou(right) >= 0.5
    assert count([truth], [wrong, right]) == Corrections(deleted=1)
    far_wrong, far_right = Box(15, 0, 30, 10, "5", 0.9), Box(0, 20, 10, 30, "3", 0.8)
    moved = count([Box(0, 5, 30, 25, "3")], [far_wrong, far_right])  # neither fits: the right one is moved
    assert moved == Corrections(moved=1, deleted=1)


def test_the_cheapest_pairing_wins_where_pairing_by_overlap_first_would_not():
    """Two overlapping lesions, two rightly named boxes: the closest pair first (the first box with
    the second lesion) leaves the first lesion a box that does not fit; both fit the other way."""
    lesions = [Box(0, 0, 10, 10, "3"), Box(3, 0, 13, 10, "3")]
    shown = [Box(1, 0, 11, 10, "3", 0.9), Box(-2, 0, 8, 10, "3", 0.8)]
    assert count(lesions, shown) == Corrections()
    assert metrics.accepted(lesions, shown) and metrics.accepted(lesions, shown[::-1])  # whatever the order


def test_many_lesions_without_a_box_near_them_are_drawn_anew():
    lesions = [Box(x, 0, x + 1, 1, "3") for x in range(0, 4000, 2)]  # 2000 lesions, none shown
    assert count(lesions, []) == Corrections(added=2000)
    assert count(lesions, [Box(0, 0, 1, 1, "3", 0.9)]) == Corrections(added=1999)


def test_effort_prices_the_pairing_it_chooses():
    from model.evaluation.effort import ActionCosts, image_effort

    truth = [Box(0, 0, 10, 10, "3")]
    wrong, right = Box(0, 0, 10, 5.55, "5", 0.9), Box(0, 4.5, 10, 10, "3", 0.8)
    costs = ActionCosts()
    assert image_effort(truth, [wrong, right], costs).with_model == pytest.approx(2 * costs.verify + costs.delete)


def test_past_the_search_limit_boxes_pair_greedily_by_overlap(monkeypatch):
    from model.evaluation import corrections

    monkeypatch.setattr(corrections, "EXACT_LIMIT", 0)
    truth = Box(0, 0, 10, 10, "3")
    wrong, right = Box(0, 0, 10, 5.55, "5", 0.9), Box(0, 4.5, 10, 10, "3", 0.8)
    assert count([truth], [wrong, right]) == Corrections(relabelled=1, deleted=1)  # the closer one kept
    assert count([truth], [Box(30, 30, 40, 40, "3", 0.9)]) == Corrections(added=1, deleted=1)
    assert count([LESION], [Box(30, 30, 70, 70, "5", 0.9)]) == Corrections(moved=1, moved_relabelled=1)
