"""model/category_reading.py: a box's category read from its class scores."""

import pytest

from model.category_reading import relabelled
from model.records import Box, Detection


def test_each_box_is_named_by_the_reading_of_its_own_scores():
    boxes = (Box(0, 0, 10, 10, "2", 0.45), Box(20, 20, 30, 30, "5", 0.6))
    scores = ({"2": 0.45, "3": 0.35, "4": 0.2, "5": 0.0}, {"2": 0.1, "3": 0.1, "4": 0.2, "5": 0.6})
    detection = Detection(boxes, 40, 40, class_scores=scores)
    assert [b.category for b in relabelled(detection, "median").boxes] == ["3", "5"]
    assert [b.category for b in relabelled(detection, "argmax").boxes] == ["2", "5"]
    assert relabelled(detection, "median").boxes[0].score == 0.45  # the place and score stay
    without_scores = Detection(boxes, 40, 40)
    assert relabelled(without_scores, "median") == without_scores
    with pytest.raises(ValueError, match="median"):
        relabelled(detection, "mean")
