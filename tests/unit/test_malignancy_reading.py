"""model/malignancy_reading.py: a box's P(malignant) from the box classifier, alone or beside the
detector's categories."""

import pytest

from model.malignancy_reading import category_mass, reread
from model.records import Box, Detection


def _detection(malignancy=(0.8, 0.1)) -> Detection:
    boxes = (Box(0, 0, 10, 10, "4", 0.9), Box(20, 20, 30, 30, "2", 0.6))
    scores = ({"2": 0.1, "3": 0.2, "4": 0.5, "5": 0.2}, {"2": 0.7, "3": 0.2, "4": 0.1, "5": 0.0})
    return Detection(boxes, 40, 40, class_scores=scores, malignancy=malignancy)


def test_mean_averages_each_boxs_pathology_head_with_its_mass_at_4_or_above():
    detection = _detection()
    assert category_mass(detection, 0) == pytest.approx(0.7) and category_mass(detection, 1) == pytest.approx(0.1)
    mean = reread(detection, "mean")
    assert mean.malignancy == pytest.approx(((0.8 + 0.7) / 2, (0.1 + 0.1) / 2))
    assert mean.boxes == detection.boxes and mean.class_scores == detection.class_scores


def test_pathology_and_a_model_without_a_box_classifier_keep_what_they_have():
    assert reread(_detection(), "pathology") == _detection()
    assert reread(_detection(malignancy=()), "mean").malignancy == ()  # nothing to read beside


def test_an_unknown_reading_is_refused_by_name():
    with pytest.raises(ValueError, match="pathology"):
        reread(_detection(), "both")
