"""Expert-seconds: the cost model, what the annotator is shown, and their use in evaluation."""

import pytest

from model.evaluation import effort
from model.evaluation.evaluate import displayed, evaluate
from model.records import Box, Detection, ImageRecord

COSTS = effort.ActionCosts()


def _box(x0: float, category: str, score: float | None = None) -> Box:
    return Box(x0, 10, x0 + 40, 50, category, score)


def test_a_correct_box_costs_one_look_a_missing_one_a_drawing():
    truth = [_box(10, "4")]
    right = effort.image_effort(truth, [_box(11, "4", 0.9)], COSTS)
    assert right.with_model == pytest.approx(COSTS.verify) and right.by_hand == pytest.approx(COSTS.draw)
    assert right.ratio == pytest.approx(1.6 / 7.0)
    missed = effort.image_effort(truth, [], COSTS)
    assert missed.with_model == pytest.approx(COSTS.draw) and missed.ratio == pytest.approx(1.0)


def test_each_wrong_box_costs_its_look_and_its_fix():
    truth = [_box(10, "4")]
    relabel = effort.image_effort(truth, [_box(11, "2", 0.9)], COSTS)
    assert relabel.with_model == pytest.approx(COSTS.verify + COSTS.relabel)
    moved_and_wrong = effort.image_effort(truth, [_box(35, "2", 0.9)], COSTS)  # IoU < 0.5
    assert moved_and_wrong.with_model == pytest.approx(COSTS.verify + COSTS.adjust + COSTS.relabel)
    extra = effort.image_effort(truth, [_box(11, "4", 0.9), _box(200, "4", 0.6)], COSTS)
    assert extra.with_model == pytest.approx(2 * COSTS.verify + COSTS.delete)
    negative = effort.image_effort([], [_box(200, "3", 0.7)], COSTS)   # BI-RADS 1 image, a false box
    assert (negative.with_model, negative.by_hand, negative.ratio) == (pytest.approx(4.5), 0, None)


def test_summary_reports_both_ends_of_the_drawing_cost():
    truths, shown = [[_box(10, "4")]], [[_box(11, "4", 0.9)]]
    s = effort.summary(truths, shown, effort.ActionCosts(draw=20))
    assert s["ratio"] == pytest.approx(1.6 / 20)
    assert s["ratio_draw_7s"] == pytest.approx(1.6 / 7) and s["ratio_draw_35s"] == pytest.approx(1.6 / 35)


def test_display_policies():
    detection = Detection((_box(10, "4", 0.3), _box(100, "2", 0.2), _box(200, "5", 0.01)), 300, 100)
    assert displayed(detection, 0.5, "threshold") == []
    assert displayed(detection, 0.5, "top1") == [detection.boxes[0]]
    assert displayed(detection, 0.25, "top1") == [detection.boxes[0]]  # already shown: not twice
    assert displayed(detection, 0.1, "top1-only") == [detection.boxes[0]]
    assert displayed(Detection((_box(10, "4", 0.01),), 300, 100), 0.5, "top1") == []  # below any kept score
    with pytest.raises(ValueError, match="display"):
        displayed(detection, 0.5, "everything")


def test_evaluation_picks_the_cheapest_display():
    records = [ImageRecord(f"i{n}", "/nonexistent.png", 300, 100, [_box(10, "4")], birads="4") for n in range(3)]
    detections = [Detection((_box(11, "4", 0.4), _box(150, "3", 0.2)), 300, 100) for _ in records]
    e = evaluate(records, detections, ["2", "3", "4", "5"]).metrics["effort"]
    assert e["displays"]["threshold"]["ratio"] == pytest.approx(1.0)        # nothing shown: all drawn
    assert e["displays"]["top1"]["seconds_per_image"] == pytest.approx(1.6)  # the right box, verified
    assert e["best_display"] in ("top1", "top1-only") and e["costs"]["draw"] == 7.0


def test_the_report_tabulates_each_display_at_both_ends_of_the_drawing_cost():
    from model.evaluation.report import effort_lines

    truths = [[Box(0, 0, 10, 10, "2")]]
    shown = {"top1": [[Box(0, 0, 10, 10, "2")]], "threshold": [[]]}
    e = {"costs": COSTS.to_dict(), "best_display": "top1",
         "displays": {d: effort.summary(truths, s, COSTS) for d, s in shown.items()}}
    lines = effort_lines(e)
    assert "| ratio | ratio, draw 7 s | ratio, draw 35 s |" in lines[5]
    top1 = next(line for line in lines if "(cheapest)" in line)  # verified only: 1.6 s of 7, of 35
    assert top1.endswith(f"| 1.6 | 7.0 | {1.6 / 7:.2f} | {1.6 / 7:.2f} | {1.6 / 35:.2f} |")
    assert all(line.count("|") == lines[5].count("|") for line in lines[5:])
    assert effort_lines(None) == []
