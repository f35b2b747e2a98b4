"""scripts/box_envelope.py: a box read as the mean envelope of rotated tight boxes, and tightened."""

import math
from dataclasses import replace

import numpy as np
import pytest

from model import datasets
from model.evaluation.evaluate import evaluate
from model.evaluation.report import write_report
from model.records import Box, Detection
from tests.scripts import load_script


@pytest.fixture(scope="module")
def box_envelope():
    return load_script("box_envelope")


def mean_envelope(width: float, height: float, degrees: float) -> tuple[float, float]:
    """The axis-aligned box around a ``width`` x ``height`` box's rotated corners, averaged over
    angles spread evenly over +-``degrees`` (numerically, apart from the script's closed form)."""
    angles = np.radians(np.linspace(-degrees, degrees, 20001))
    cos, sin = np.cos(angles), np.abs(np.sin(angles))
    return float(np.mean(width * cos + height * sin)), float(np.mean(width * sin + height * cos))


def test_the_mean_envelope_of_a_tight_box_tightens_back_to_it(box_envelope):
    wide, tall = mean_envelope(150.0, 90.0, 10.0)
    assert tall / 90.0 > 1.1 > wide / 150.0 > 1.0  # a wide lesion's height grows most
    tight = box_envelope.tightened(Box(100 - wide / 2, 50 - tall / 2, 100 + wide / 2, 50 + tall / 2, "4", 0.9), 10.0)
    assert (tight.width, tight.height) == (pytest.approx(150.0, abs=0.01), pytest.approx(90.0, abs=0.01))
    assert ((tight.x0 + tight.x1) / 2, (tight.y0 + tight.y1) / 2) == (pytest.approx(100.0), pytest.approx(50.0))
    assert (tight.category, tight.score) == ("4", 0.9)


def test_no_rotation_and_too_elongated_boxes_stay_as_they_are(box_envelope):
    box = Box(10, 10, 110, 60, "3", 0.7)
    assert box_envelope.tightened(box, 0.0) == box
    c, s = box_envelope.envelope_factors(10.0)
    assert (c, s) == (pytest.approx(math.sin(math.radians(10)) / math.radians(10)), pytest.approx(0.0870, abs=1e-4))
    sliver = Box(0, 0, 200, 10, "3", 0.7)  # no tight box has this as its mean envelope
    assert box_envelope.tightened(sliver, 10.0) == sliver


def test_a_report_scored_as_stored_and_tightened(box_envelope, tmp_path, busbra_dir):
    first, second = datasets.load(f"busbra:{busbra_dir}")[:2]
    grown = []
    for record in (first, second):  # each expert box grown as the training's rotations grow it
        truth = record.boxes[0]
        wide, tall = mean_envelope(truth.width, truth.height, 10.0)
        cx, cy = (truth.x0 + truth.x1) / 2, (truth.y0 + truth.y1) / 2
        grown.append(Detection((replace(truth, x0=cx - wide / 2, y0=cy - tall / 2, x1=cx + wide / 2,
                                        y1=cy + tall / 2, score=0.9),), record.width, record.height))
    report = write_report(evaluate([first, second], grown, ["2", "3", "4", "5"], decision="top"),
                          tmp_path / "report", "m", "busbra")
    stored, tight = box_envelope.figures(report, None), box_envelope.figures(report, 10.0)
    assert stored["median_iou"] < 0.95 < tight["median_iou"]
    assert tight["top_box_on_lesion"] == stored["top_box_on_lesion"] == 1.0
    assert stored["height_ratio"] > 1.02 and tight["height_ratio"] == pytest.approx(1.0, abs=0.005)
