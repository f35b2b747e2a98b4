"""scripts/category_weights.py: a per-class weight on the top box's class scores, fitted on some
images and scored on others, from a report's kept detections."""

from dataclasses import replace

import pytest

from model import datasets
from model.evaluation.evaluate import evaluate
from model.evaluation.report import write_report
from model.records import Box, Detection
from tests.scripts import load_script


@pytest.fixture(scope="module")
def weights():
    return load_script("category_weights")


def _rows(n: int) -> list:
    # the model puts a little less on 3 than on 2 for every true 3; true 2s are clear
    threes = [("3", f"p{i}", {"2": 0.45, "3": 0.40, "4": 0.1, "5": 0.05}) for i in range(n)]
    twos = [("2", f"q{i}", {"2": 0.8, "3": 0.1, "4": 0.05, "5": 0.05}) for i in range(n)]
    return threes + twos


def test_a_weight_that_lifts_an_underrated_class_is_found_and_kept_on_other_patients(weights):
    rows = _rows(10)
    assert weights.correct(rows, {}) == 10  # the argmax calls every 3 a 2
    fitted = weights.fit(rows)
    assert weights.correct(rows, fitted) == 20 and fitted["3"] > fitted["2"]
    result = weights.crossfit(rows)
    assert result["argmax"] == 0.5 and result["crossfit"] == 1.0
    assert weights.decide(None, fitted) == "1"  # no box: no lesion, whatever the weights


def test_images_read_from_a_report_are_classified_by_their_top_box(weights, tmp_path, busbra_dir):
    records = datasets.load(f"busbra:{busbra_dir}")[:2]
    detections = [Detection((replace(r.boxes[0], category="3", score=0.7), Box(0, 0, 5, 5, "5", 0.2)),
                            r.width, r.height,
                            class_scores=({"2": 0.1, "3": 0.7, "4": 0.1, "5": 0.1},
                                          {"2": 0.1, "3": 0.1, "4": 0.1, "5": 0.2})) for r in records]
    report = write_report(evaluate(records, detections, ["2", "3", "4", "5"], decision="top"),
                          tmp_path / "report", "m", "busbra")
    rows = weights.images(report)
    assert [scores for _, _, scores in rows] == [{"2": 0.1, "3": 0.7, "4": 0.1, "5": 0.1}] * 2
    assert [truth for truth, _, _ in rows] == [r.birads for r in records]
    assert [patient for _, patient, _ in rows] == [r.patient for r in records]
