"""One box per lesion: overlapping boxes of any categories merge into the better-ranked one."""

import torch

from model.merge import merged, one_box_per_lesion
from model.records import Box, Detection


def _detection(ranks: tuple[float, ...] = ()) -> Detection:
    boxes = (Box(0, 0, 40, 40, category="3", score=0.9),
             Box(2, 0, 42, 40, category="5", score=0.8),     # on the first one's lesion: IoU 0.90
             Box(100, 100, 130, 130, category="2", score=0.6))  # another lesion
    return Detection(boxes=boxes, width=200, height=200,
                     class_scores=({"3": 0.9}, {"5": 0.8}, {"2": 0.6}),
                     malignancy=(0.1, 0.7, 0.2), ranks=ranks)


def test_boxes_on_one_lesion_merge_into_the_better_scored_one_whatever_their_categories():
    result = merged(_detection(), iou=0.5)
    assert [b.category for b in result.boxes] == ["3", "2"]
    assert result.class_scores == ({"3": 0.9}, {"2": 0.6})  # each verdict goes with its box
    assert result.malignancy == (0.1, 0.2)
    assert result.ranks == ()


def test_where_the_box_classifier_ranks_the_rank_decides_which_box_stays():
    result = merged(_detection(ranks=(0.3, 0.95, 0.5)), iou=0.5)
    assert [b.category for b in result.boxes] == ["5", "2"]  # the second box outranks the first
    assert result.malignancy == (0.7, 0.2)
    assert result.ranks == (0.95, 0.5)
    assert result.top() == result.boxes[0]


def test_boxes_that_overlap_less_than_the_iou_all_stay_in_their_order():
    detection = _detection()
    assert merged(detection, iou=0.95) == detection
    assert merged(Detection(boxes=detection.boxes[:1], width=200, height=200), iou=0.5).boxes == detection.boxes[:1]


def test_one_box_per_lesion_keeps_indices_in_their_given_order():
    xyxy = torch.tensor([[0.0, 0, 40, 40], [100, 100, 130, 130], [1, 0, 41, 40]])
    assert one_box_per_lesion(xyxy, torch.tensor([0.2, 0.9, 0.5]), 0.5).tolist() == [1, 2]
