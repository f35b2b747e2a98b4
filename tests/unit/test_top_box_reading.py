"""scripts/top_box_reading.py: other readings of a report's kept detections, with no model."""

import json
from dataclasses import replace

import pytest

from model import datasets
from model.evaluation.evaluate import evaluate
from model.evaluation.report import write_report
from model.records import Box, Detection
from tests.scripts import load_script

CLASSES = ["2", "3", "4", "5"]


@pytest.fixture(scope="module")
def reading():
    return load_script("top_box_reading")


def test_a_split_softmax_is_read_by_its_median_and_malignancy_three_ways(reading, tmp_path, busbra_dir, capsys):
    records = [r for r in datasets.load(f"busbra:{busbra_dir}") if r.birads in ("3", "5")]
    detections = []
    for record in records:
        lesion = replace(record.boxes[0], score=0.9)
        # a 3 whose argmax is 2 (0.45) while 0.8 lies at 3 or below: the median names it right; a
        # median at 5 needs half the mass at 5, so the argmax names that one right too
        scores = ({"2": 0.45, "3": 0.35, "4": 0.2, "5": 0.0} if record.birads == "3"
                  else {"2": 0.3, "3": 0.0, "4": 0.15, "5": 0.55})
        malignant = record.pathology == "malignant"
        # a doubtful box far off with the opposite malignancy: only the readings over all boxes see it
        decoy = Box(0, 0, 4, 4, "2", 0.85 if malignant else 0.1)
        decoy_scores = {"2": 0.0, "3": 0.0, "4": 0.0, "5": 1.0}  # read by no top-box reading
        detections.append(Detection((lesion, decoy), record.width, record.height,
                                    class_scores=(scores, decoy_scores),
                                    malignancy=(0.8 if malignant else 0.2, 0.0 if malignant else 1.0)))
    report = write_report(evaluate(records, detections, CLASSES, decision="top"), tmp_path / "r", "m", "busbra")

    result = reading.readings(report)
    assert result["images"] == 4
    assert result["argmax"]["accuracy"] == 0.5 and result["median"]["accuracy"] == 1
    assert result["median"]["kappa"] == pytest.approx(1.0)
    # top1-only shows the lesion's box: verified as it is (1.6 s), or relabelled too (+2.9 s), per 7 s by hand
    assert result["median"]["effort"] == pytest.approx(1.6 / 7)
    assert result["argmax"]["effort"] == pytest.approx((1.6 + 2.9 + 1.6) / (2 * 7))
    assert result["auc_top"] == 1.0       # the top box's own P(malignant) ranks all right
    assert result["auc_max3"] == 0.0      # the benign images' decoys (1.0) outrank every lesion
    # score-weighted, malignant: (0.9 x 0.8 + 0.85 x 0) / 1.75 = 0.41; benign: (0.9 x 0.2 + 0.1 x 1) / 1.0
    assert reading.weighted_malignancy(detections[0]) == pytest.approx(0.28)
    assert result["auc_weighted"] == 1.0
    # top-mean: the top box's P(malignant) averaged with its mass at 4 or above (0.2 for the 3s,
    # 0.7 for the 5s); the decoy's (1.0) is not read. Malignant (0.8 + mass) / 2 >= 0.5 > benign
    # (0.2 + mass) / 2 <= 0.45: all ranked right
    for record, detection in zip(records, detections):
        mass = 0.2 if record.birads == "3" else 0.7
        assert reading.top_mean_malignancy(detection) == pytest.approx((detection.malignancy[0] + mass) / 2)
        # item 50: the head at a quarter's weight, the categories' mass at three quarters
        assert reading.IMAGE_MALIGNANCY_READINGS["top-mean-0.25"](detection) == \
            pytest.approx(0.25 * detection.malignancy[0] + 0.75 * mass)
    assert result["auc_top-mean"] == 1.0
    # the 3s here are benign and the 5s malignant: at either weight head and categories agree
    assert result["auc_top-mean-0.25"] == result["auc_top-mean-0.75"] == 1.0
    # a report whose P(malignant) was already read as the mean is not averaged with its categories again
    metrics = json.loads((report / "metrics.json").read_text())
    (report / "metrics.json").write_text(json.dumps({**metrics, "readings": {"malignancy": "mean"}}))
    again = reading.readings(report)
    assert again["auc_top-mean"] is None and again["auc_top"] == result["auc_top"]
    assert again["auc_top-mean-0.25"] is None and again["auc_top-mean-0.75"] is None

    assert reading.main([str(report)]) == 0
    assert "category by median" in capsys.readouterr().out
