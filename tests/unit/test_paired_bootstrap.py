"""scripts/paired_bootstrap.py: two reports' figures compared on the same patients' resamples, no model run."""

import random
from collections import Counter
from dataclasses import replace

import pytest

from model import datasets
from model.evaluation.evaluate import evaluate
from model.evaluation.report import write_report
from model.records import Box, Detection
from tests.scripts import load_script

CLASSES = ["2", "3", "4", "5"]


@pytest.fixture(scope="module")
def bootstrap():
    return load_script("paired_bootstrap")


def _report(records, placed, folder):
    """A report whose box lies on the lesion where ``placed(n)``, else in a corner away from it."""
    detections = []
    for n, record in enumerate(records):
        truth = record.boxes[0]
        box = replace(truth, score=0.9) if placed(n) else Box(0, 0, 8, 8, truth.category, 0.9)
        detections.append(Detection((box,), record.width, record.height,
                                    class_scores=({c: 0.9 if c == box.category else 0.0 for c in CLASSES},)))
    return write_report(evaluate(records, detections, CLASSES, decision="top"), folder, "m", "busbra")


def test_a_patients_images_are_drawn_together_and_each_copy_named_apart(bootstrap, busbra_dir):
    records = [r for r in datasets.load(f"busbra:{busbra_dir}")]
    assert len(records) >= 6
    shared = ["p0", "p0", "p1", "p1", "p1"]  # two patients with several views each, the rest alone
    records = [replace(r, patient=p) for r, p in zip(records, shared)] + records[len(shared):]
    patients = bootstrap.by_patient(records)
    assert len(patients) == len(records) - 3 and sorted(map(len, patients.values()))[-2:] == [2, 3]
    for seed in range(20):
        draw = bootstrap.resample(patients, random.Random(seed))
        names = [name for _, name in draw]
        assert len(set(names)) == len(names)  # a patient drawn twice: its images twice, named apart
        times = Counter(image for image, _ in draw)
        for images in patients.values():
            assert len({times[image] for image in images}) == 1  # a patient's views as often as each other


def test_a_report_against_itself_differs_by_nothing_in_any_draw(bootstrap, busbra_dir, tmp_path):
    records = [r for r in datasets.load(f"busbra:{busbra_dir}") if r.boxes]
    report = _report(records, lambda n: n % 2 == 0, tmp_path / "a")
    result = bootstrap.compare(report, report, resamples=10, seed=0)
    assert result["top_box_on_lesion"]["a"] == pytest.approx(0.5, abs=0.1)
    for name, figure in result.items():
        if figure["delta"] is not None:
            assert (figure["delta"], figure["low"], figure["high"]) == (0.0, 0.0, 0.0), name


def test_a_report_better_on_some_images_and_worse_on_none_gains_in_every_draw(bootstrap, busbra_dir, tmp_path):
    records = [r for r in datasets.load(f"busbra:{busbra_dir}") if r.boxes]
    worse = _report(records, lambda n: n % 2 == 0, tmp_path / "a")
    better = _report(records, lambda n: True, tmp_path / "b")
    figure = bootstrap.compare(worse, better, resamples=20, seed=0)["top_box_on_lesion"]
    assert figure["b"] == 1.0 and figure["delta"] == pytest.approx(1.0 - figure["a"]) and figure["delta"] > 0
    assert 0.0 <= figure["low"] <= figure["delta"] <= figure["high"] <= 1.0 and figure["resamples"] == 20
