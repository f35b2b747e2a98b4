"""Table II at a fitted cut on the second model's P(5) (model.evaluation.screening_cut), on
constructed detections (no model)."""

import pytest

from model.evaluation import screening_cut
from model.evaluation.evaluate import evaluate
from model.records import Box, Detection, ImageRecord

LESION = (10, 10, 50, 50)
CLASSES = ["2", "3", "5"]


def _record(name: str, birads: str) -> ImageRecord:
    return ImageRecord(name, f"/nonexistent/{name}.png", 100, 100, [Box(*LESION, birads)], birads=birads)


def _second_model(p5: float) -> Detection:
    """One box whose most probable category is 2 unless P(5) passes 0.5."""
    category = "5" if p5 > 0.5 else "2"
    return Detection((Box(*LESION, category, 0.9),), 100, 100,
                     class_scores=({"2": 1.0 - p5, "3": 0.0, "5": p5},))


def test_youden_cut_lies_halfway_between_the_scores_it_separates():
    assert screening_cut.youden_cut([0.1, 0.2, 0.3, 0.4], [False, False, True, True]) == pytest.approx(0.25)
    # a 2 above a 5: dropping that 5 (SEN 1/2, SPE 1) ties with keeping that 2 (1, 1/2); the lowest cut wins
    assert screening_cut.youden_cut([0.1, 0.3, 0.35, 0.6], [False, True, False, True]) == pytest.approx(0.2)
    assert screening_cut.youden_cut([0.5, 0.5], [True, False]) == pytest.approx(-0.5)  # none separates: all in
    with pytest.raises(ValueError, match="positive and negative"):
        screening_cut.youden_cut([0.1, 0.2], [True, True])


def test_fit_reads_only_table_ii_images_and_needs_both_sides():
    records = [_record("a", "5"), _record("b", "2"), _record("c", "3"), _record("d", "4")]
    detections = [_second_model(p) for p in (0.3, 0.1, 0.2, 0.9)]
    fitted = screening_cut.fit_on_records(records, detections)
    # the BI-RADS 4 image (P(5) 0.9) would otherwise pull the cut up
    assert fitted == {"cut": pytest.approx(0.25), "images": 3, "positives": 1, "biopsy_threshold": "4"}
    assert screening_cut.fit_on_records(records[1:3], detections[1:3]) is None  # no BI-RADS 5


def test_cut_round_trips_and_a_refit_without_table_ii_images_leaves_no_stale_cut(tmp_path):
    assert screening_cut.load_cut(tmp_path) is None
    fitted = {"cut": 0.25, "images": 3, "positives": 1, "biopsy_threshold": "4",
              "data": "breast:/data/BrEaST", "splits": ["part1"]}
    screening_cut.store_cut(tmp_path, fitted)
    assert screening_cut.load_cut(tmp_path) == fitted and screening_cut.fitted_on(fitted) == "BrEaST part1"
    assert screening_cut.load_cut(tmp_path, threshold="3") is None  # fitted on P(5), not P(>= 3)
    screening_cut.store_cut(tmp_path, None)
    assert screening_cut.load_cut(tmp_path) is None


def test_table_ii_is_reported_at_the_cut_beside_the_most_probable_category():
    # the model's most probable category calls both 5s 2 (P(5) 0.3 and 0.4); the cut finds them
    records = [_record("a", "5"), _record("b", "5"), _record("c", "2"), _record("d", "3"), _record("e", "4")]
    detections = [_second_model(p) for p in (0.3, 0.4, 0.1, 0.2, 0.9)]
    plain = evaluate(records, detections, CLASSES, decision="top").metrics["screening_paper"]
    assert (plain["tp"], plain["fn"], plain["fp"], plain["tn"]) == (0, 2, 0, 2) and "at_cut" not in plain
    cut = {"cut": 0.25, "data": "breast:/data/BrEaST", "splits": ["part1"]}
    table = evaluate(records, detections, CLASSES, decision="top", screening_cut=cut).metrics["screening_paper"]
    assert (table["tp"], table["fn"], table["fp"], table["tn"]) == (0, 2, 0, 2)  # the paper's way unchanged
    at_cut = table["at_cut"]
    assert (at_cut["tp"], at_cut["fn"], at_cut["fp"], at_cut["tn"], at_cut["n"]) == (2, 0, 0, 2, 4)
    assert at_cut["cut"] == 0.25 and at_cut["sensitivity"] == at_cut["specificity"] == 1.0
    assert screening_cut.fitted_on(at_cut) == "BrEaST part1"
