"""How a box's category probabilities are mixed from the detector's and the box classifier's."""

import pytest

from model.box_classifier import blend

DETECTOR = {"2": 0.1, "3": 0.1, "4": 0.4, "5": 0.0}      # lesion mass 0.6 (background 0.4)
CLASSIFIER = {"2": 0.1, "3": 0.6, "4": 0.1, "5": 0.0, "background": 0.2}


def test_blend_keeps_the_detectors_lesion_mass():
    mixed = blend(DETECTOR, CLASSIFIER, 0.5)
    assert set(mixed) == set(DETECTOR)
    assert sum(mixed.values()) == pytest.approx(0.6)


def test_blend_weights_each_opinion():
    assert blend(DETECTOR, CLASSIFIER, 0.0) == pytest.approx(DETECTOR)
    # All classifier: its lesion categories renormalised (0.8 of lesion mass) onto the detector's 0.6.
    assert blend(DETECTOR, CLASSIFIER, 1.0) == pytest.approx({"2": 0.075, "3": 0.45, "4": 0.075, "5": 0.0})
    half = blend(DETECTOR, CLASSIFIER, 0.5)
    assert max(half, key=half.get) == "3"  # the classifier's confident 3 outweighs the detector's 4
    assert half["3"] == pytest.approx(0.6 * (0.5 * 0.1 / 0.6 + 0.5 * 0.75))


def test_blend_leaves_a_box_without_lesion_mass_alone():
    assert blend({"2": 0.0, "3": 0.0}, CLASSIFIER, 0.5) == {"2": 0.0, "3": 0.0}
