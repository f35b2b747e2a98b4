"""One training job per project at a time, however many workers listen (real Redis, no worker)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
from rq import Queue

from backend import training
from backend.jobs import ProjectBusy, TrainingQueue


def test_a_projects_second_training_waits_for_the_first_and_other_projects_do_not(settings, redis_conn):
    queue = TrainingQueue(redis_conn, replace(settings, job_timeout=2))
    waited, order = [], []

    def second() -> None:
        with queue.training(7, lambda: waited.append(time.monotonic())):
            order.append("second")

    with queue.training(7):
        with queue.training(8):  # another project trains beside it
            order.append("other project")
        follower = threading.Thread(target=second)
        follower.start()
        time.sleep(0.5)
        order.append("first")
    follower.join(timeout=10)
    assert order == ["other project", "first", "second"] and len(waited) == 1
    with queue.training(7):  # released again
        pass


def test_a_job_finding_its_project_held_past_job_timeout_fails_without_training(settings, redis_conn, monkeypatch):
    """The RQ job itself takes the lock before it reads anything from Label Studio."""
    short = replace(settings, job_timeout=1)
    job = Queue(short.queue_name, connection=redis_conn).enqueue("backend.training.train_project", 7)
    monkeypatch.setattr(training, "get_current_job", lambda: job)
    monkeypatch.setattr(training.Settings, "from_env", classmethod(lambda cls: short))
    with TrainingQueue(redis_conn, short).training(7):
        with pytest.raises(ProjectBusy, match="JOB_TIMEOUT=1"):
            training.train_project(7)
    assert not (short.model_dir / "project-7").exists()
