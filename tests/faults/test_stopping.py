"""Stopping `make run` (`python -m backend.serve`) while a training job runs: nothing it started
outlives it, the job's own process included (RQ runs a job in a "horse" of its own process group,
which a plain SIGTERM to the worker leaves running for as long as the job takes)."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.job import JobStatus

from tests.conftest import redis_database
from tests.e2e.conftest import free_port, start_backend
from tests.faults.conftest import _children, wait_until

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie has ended; its parent has not yet reaped it


def _worker(server: int) -> int:
    return next(p for p in _children(server) if b"backend.worker" in Path(f"/proc/{p}/cmdline").read_bytes())


# as a service manager stops it, and as a closed terminal (or a dropped SSH session) does
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_stopping_the_backend_stops_the_training_job_it_runs(tmp_path, redis_server, stop):
    queue_name = f"stop-{uuid.uuid4().hex[:8]}"
    redis_url = redis_database(redis_server, 12)
    closed = {"url": f"http://127.0.0.1:{free_port()}", "token": "x"}
    with start_backend(tmp_path, closed, REDIS_URL=redis_url, RQ_QUEUE=queue_name) as backend:
        worker = _worker(backend["pid"])
        job = Queue(queue_name, connection=Redis.from_url(redis_url)).enqueue("time.sleep", 600)
        assert wait_until(lambda: job.get_status(refresh=True) == JobStatus.STARTED and _children(worker), 60)
        [horse] = _children(worker)
        gunicorn = [p for p in _children(backend["pid"]) if p != worker]
        started = time.monotonic()
        os.kill(backend["pid"], stop)
        assert wait_until(lambda: not _alive(backend["pid"]), 40)
    assert time.monotonic() - started < 30  # not the job's 600 s
    assert not _alive(worker) and not _alive(horse)
    assert gunicorn and not any(_alive(p) for p in gunicorn)  # the server is gone too, not orphaned
