"""Box voting: where the agreeing proposals put the lesion, weighted by how sure each is of it."""

import pytest
import torch

from model.box_voting import MIN_VOTER_SCORE, moved, vote, voters
from model.records import Box


def test_a_box_moves_to_the_weighted_mean_of_the_voters_that_overlap_it():
    boxes = torch.tensor([[10.0, 10.0, 50.0, 50.0], [200.0, 200.0, 220.0, 220.0]])
    candidates = torch.tensor([[10.0, 10.0, 50.0, 50.0],    # the box itself
                               [14.0, 10.0, 54.0, 50.0],    # shifted 4 px: IoU 0.82
                               [100.0, 100.0, 140.0, 140.0]])  # elsewhere: no say
    weights = torch.tensor([1.0, 3.0, 9.0])
    voted = vote(boxes, candidates, weights, iou=0.5)
    assert voted[0].tolist() == pytest.approx([13.0, 10.0, 53.0, 50.0])  # (1 * 10 + 3 * 14) / 4
    assert voted[1].tolist() == boxes[1].tolist()  # no voter overlaps it: it stays


def test_the_iou_decides_who_votes():
    box = torch.tensor([[0.0, 0.0, 40.0, 40.0]])
    half = torch.tensor([[0.0, 0.0, 40.0, 20.0]])  # IoU 0.5 exactly
    assert vote(box, half, torch.tensor([1.0]), iou=0.5).tolist() == half.tolist()
    assert vote(box, half, torch.tensor([1.0]), iou=0.6).tolist() == box.tolist()
    assert vote(box, torch.zeros((0, 4)), torch.zeros(0), iou=0.5).tolist() == box.tolist()


def test_each_proposal_votes_with_its_most_probable_category_and_its_lesion_probability():
    # two categories: each proposal regresses one box per category (R, 4 * K)
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0, 1.0, 1.0, 11.0, 11.0],
                          [2.0, 2.0, 12.0, 12.0, 3.0, 3.0, 13.0, 13.0],
                          [5.0, 5.0, 15.0, 15.0, 6.0, 6.0, 16.0, 16.0]])
    probabilities = torch.tensor([[0.6, 0.1, 0.3],    # category 0 most probable, lesion 0.7
                                  [0.1, 0.5, 0.4],    # category 1, lesion 0.6
                                  [0.02, 0.01, 0.97]])  # lesion 0.03 < MIN_VOTER_SCORE: no vote
    assert 0.03 < MIN_VOTER_SCORE
    chosen, weights, _ = voters(boxes, probabilities)
    assert chosen.tolist() == [[0.0, 0.0, 10.0, 10.0], [3.0, 3.0, 13.0, 13.0]]
    assert weights.tolist() == pytest.approx([0.7, 0.6])


def test_class_agnostic_regression_votes_with_its_one_box():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    chosen, weights, _ = voters(boxes, torch.tensor([[0.3, 0.5, 0.2]]))
    assert chosen.tolist() == boxes.tolist() and weights.tolist() == pytest.approx([0.8])


def test_moved_boxes_keep_their_category_score_and_order():
    boxes = [Box(0, 0, 10, 10, "4", 0.9), Box(50, 50, 60, 60, "2", 0.4)]
    after = moved(boxes, [[1.0, 2.0, 11.0, 12.0], [50.0, 50.0, 60.0, 60.0]])
    assert after == [Box(1, 2, 11, 12, "4", 0.9), Box(50, 50, 60, 60, "2", 0.4)]
    with pytest.raises(ValueError):  # a place for every box, no more, no fewer
        moved(boxes, [[1.0, 2.0, 11.0, 12.0]])


@pytest.mark.parametrize("options, iou", [([], 0.5), (["--box-voting", "0.7"], 0.7), (["--no-box-voting"], None)])
@pytest.mark.parametrize("command", [["predict", "--model", "m", "image.png"],
                                     ["simulate", "--data", "busbra:d", "--holdout-splits", "fold4", "--out", "o"]])
def test_birads_votes_as_the_backend_does_unless_told_not_to(command, options, iou):
    from model.cli import parser

    assert parser().parse_args([*command, *options]).box_voting == iou


@pytest.mark.parametrize("command", [["predict", "--model", "m", "image.png"],
                                     ["evaluate", "--data", "busbra:d", "--model", "m", "--out", "o"],
                                     ["fit-cuts", "--data", "breast:d", "--model", "m"]])
def test_birads_reads_the_proposals_asked_for_and_refuses_none(command, capsys):
    """--proposals (the box head's proposals, box voting's voters; item 76): None (the default) unless given."""
    from model.cli import parser

    assert parser().parse_args(command).proposals is None
    assert parser().parse_args([*command, "--proposals", "100"]).proposals == 100
    with pytest.raises(SystemExit):
        parser().parse_args([*command, "--proposals", "0"])
    assert "0 is not a positive number" in capsys.readouterr().err


def test_category_voting_gives_a_box_the_lesion_weighted_mean_softmax_of_its_overlapping_proposals():
    """Item 62: each kept box reads the softmax of the proposals whose own box overlaps it at the
    IoU, weighted by their P(lesion); one no voter overlaps keeps its own."""
    from model.box_voting import voted_probabilities

    kept = torch.tensor([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0]])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0],     # the kept box's own proposal
                          [1.0, 0.0, 11.0, 10.0],     # shifted 1 px: IoU 0.82, votes
                          [50.0, 50.0, 60.0, 60.0],   # elsewhere: no say
                          [0.0, 0.0, 10.0, 10.0]])    # on it, but lesion 0.03: no vote
    probabilities = torch.tensor([[0.6, 0.2, 0.2],    # lesion 0.8
                                  [0.1, 0.3, 0.6],    # lesion 0.4
                                  [0.9, 0.05, 0.05],
                                  [0.02, 0.01, 0.97]])
    own = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    mean = voted_probabilities(kept, own, voters(boxes, probabilities), iou=0.5)
    expected = (0.8 * probabilities[0] + 0.4 * probabilities[1]) / 1.2
    assert mean[0].tolist() == pytest.approx(expected.tolist())
    assert mean[1].tolist() == own[1].tolist()
    nobody = voters(torch.zeros((0, 4)), torch.zeros((0, 3)))
    assert voted_probabilities(kept, own, nobody, iou=0.5).tolist() == own.tolist()


def test_each_kept_box_gets_its_own_proposals_class_scores_when_detectron2_drops_a_non_finite_one():
    """detectron2's inference drops proposals whose box or scores are not finite before it keeps
    boxes, so the indices it returns count the finite ones (a diverging fine-tune makes such rows)."""
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.box_regression import Box2BoxTransform
    from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
    from detectron2.structures import Boxes, Instances

    from model.predict import extend_inference

    head = FastRCNNOutputLayers(ShapeSpec(channels=4), box2box_transform=Box2BoxTransform((10, 10, 5, 5)),
                                num_classes=2, test_score_thresh=0.05, test_nms_thresh=0.5, test_topk_per_image=10)
    extend_inference(head, voting_iou=None)
    logits = torch.tensor([[float("nan"), 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 3.0, 0.0]])  # last column: background
    deltas = torch.zeros(3, 8)
    proposals = Instances((100, 100), proposal_boxes=Boxes(torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0], [60.0, 60.0, 90.0, 90.0]])))
    [result], _ = head.inference((logits, deltas), [proposals])
    expected = torch.softmax(logits[1:], dim=1)
    for box, label, scores in zip(result.pred_boxes.tensor, result.pred_classes, result.class_scores):
        row = 0 if box[0] == 20 else 1  # the proposal this box came from
        assert torch.allclose(scores, expected[row]) and int(scores[:2].argmax()) == int(label)


def test_the_served_vote_is_float32_under_bf16_autocast():
    """The vote runs inside the detector's forward pass: under bf16 autocast its matrix product
    would put the corners on a 2-4 px grid at 512-1024 px (model.predict._vote)."""
    from detectron2.structures import Boxes, Instances

    from model.predict import _vote

    generator = torch.Generator().manual_seed(0)
    corners = torch.tensor([[301.3, 517.1, 677.4, 791.4]])
    proposals = corners.repeat(40, 2) + torch.randn(40, 8, generator=generator) * 6  # 2 classes, 40 proposals
    probs = torch.softmax(torch.randn(40, 3, generator=generator), dim=1)

    def voted(autocast: bool) -> list[float]:
        instances = Instances((1024, 1024), pred_boxes=Boxes(corners.clone()), class_scores=probs[:1].clone())
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            _vote(instances, proposals, probs, (1024, 1024), 0.5, None)
        return instances.voted_boxes.tensor[0].tolist()

    assert voted(True) == voted(False)
    assert voted(False) != pytest.approx([round(v / 4) * 4 for v in voted(False)], abs=0.01)  # not on a grid
