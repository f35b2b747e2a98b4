"""The training probe times steps with in-process loading; a real run's loader workers overlap the
loading with the model's compute (model.train.overlapped_step_seconds)."""

import pytest

from model.train import overlapped_step_seconds


def test_without_workers_a_step_costs_what_the_probe_measured():
    assert overlapped_step_seconds([0.5, 0.7], [0.1, 0.3], workers=0) == pytest.approx(0.6)


def test_workers_hide_the_loading_behind_the_compute():
    # a GPU step: 0.45 s measured, of which 0.35 s loading; 8 workers load 8 batches at once
    assert overlapped_step_seconds([0.45], [0.35], workers=8) == pytest.approx(0.10)


def test_too_few_workers_leave_the_step_waiting_for_data():
    # 0.9 s of loading per batch, 2 workers: a batch every 0.45 s, longer than the 0.1 s of compute
    assert overlapped_step_seconds([1.0, 1.0], [0.9, 0.9], workers=2) == pytest.approx(0.45)
