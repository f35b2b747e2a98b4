"""The fault suite's server: `python -m backend.serve` (what `make run` starts: gunicorn and an RQ
worker) against the real Redis of tests/conftest.py, with basic auth, a webhook secret, local
files and a served model, as a hospital would run it. Label Studio's URL points at a closed port:
a training job that slips through could only fail, and the tests check that it changed nothing.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
import uuid
from pathlib import Path

import pytest
import requests

from model.registry import Registry
from tests.conftest import redis_database
from tests.e2e.conftest import CONFIG, REPO, free_port, start_backend

USER, PASSWORD, SECRET = "ls", "basic-secret", "hook-secret"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
AUTH_MAX_FAILURES, AUTH_FAILURE_WINDOW = 5, 20
PROJECT = 2
SERVED = "v-served"
FIGURES = os.environ.get("FAULT_FIGURES")  # bench/faults.sh collects the measured figures here


def record(name: str, value: object) -> None:
    """Keep a measured figure for bench/faults.sh (the README's table); tests assert their own bounds."""
    print(f"\nfigure {name}: {value}")
    if FIGURES:
        path = Path(FIGURES)
        figures = json.loads(path.read_text()) if path.is_file() else {}
        figures[name] = value
        path.write_text(json.dumps(figures, indent=1))


@pytest.fixture(scope="module")
def hardened(tmp_path_factory, redis_server, tiny_model, busbra_dir):
    """The running server: its URL, model dir, local-files root and a check that nothing was lost."""
    work = tmp_path_factory.mktemp("faults")
    files = work / "files"
    shutil.copytree(busbra_dir / "Images", files)
    registry = Registry(work / "models" / f"project-{PROJECT}")
    shutil.copytree(tiny_model, registry.path(SERVED))
    registry.describe(SERVED, parent=None)
    registry.promote(SERVED)
    closed_port = free_port()
    settings = {
        "REDIS_URL": redis_database(redis_server, 11), "RQ_QUEUE": f"faults-{uuid.uuid4().hex[:8]}",
        "BASIC_AUTH_USER": USER, "BASIC_AUTH_PASS": PASSWORD, "WEBHOOK_SECRET": SECRET,
        "LOCAL_FILES_ROOT": str(files), "ALLOWED_IMAGE_HOSTS": "images.example.org,localhost,127.0.0.1",
        "MAX_TASKS": "50", "MAX_REQUEST_BYTES": "2000000", "REQUEST_TIMEOUT": "3", "FETCH_TIMEOUT": "2",
        "RETRAIN_AFTER": "100", "TRAIN_MAX_ITER": "1", "THREADS": "16", "SCORE_THRESHOLD": "0.0",
        # the auth test guesses more than this and then waits the window out
        "AUTH_MAX_FAILURES": str(AUTH_MAX_FAILURES), "AUTH_FAILURE_WINDOW": str(AUTH_FAILURE_WINDOW)}
    with start_backend(work, {"url": f"http://127.0.0.1:{closed_port}", "token": "x"}, **settings) as backend:
        url = backend["url"]
        setup = requests.post(f"{url}/setup", headers=AUTH, timeout=60,
                              json={"project": f"{PROJECT}.1", "schema": CONFIG})
        assert setup.status_code == 200 and setup.json()["model_version"] == SERVED
        weights = (registry.path(SERVED) / "model_final.pth").read_bytes()

        def intact() -> None:
            """The server answers, serves the same version, and its files are as they were."""
            health = requests.get(f"{url}/health", headers=AUTH, timeout=10)
            assert health.status_code == 200, health.text
            assert requests.post(f"{url}/setup", headers=AUTH, timeout=30, json={
                "project": f"{PROJECT}.1", "schema": CONFIG}).json()["model_version"] == SERVED
            assert registry.current() == SERVED and registry.problem(SERVED) is None
            assert (registry.path(SERVED) / "model_final.pth").read_bytes() == weights

        yield {"url": url, "files": files, "registry": registry, "intact": intact, "log": backend["log"],
               "pid": backend["pid"],
               "redis": settings["REDIS_URL"], "queue": settings["RQ_QUEUE"]}


def predict_body(*references: str) -> dict:
    return {"project": f"{PROJECT}.1", "label_config": CONFIG,
            "tasks": [{"id": n + 1, "data": {"image": r}} for n, r in enumerate(references)]}


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def gunicorn_rss_mb(root: int) -> float:
    """Resident memory of the gunicorn processes (master and workers) under the server ``root``, MB."""
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            todo += _children(pid)
            if b"gunicorn" in Path(f"/proc/{pid}/cmdline").read_bytes():
                status = Path(f"/proc/{pid}/status").read_text()
                total += int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return total / 1024


def wait_until(condition, seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


__all__ = ["AUTH", "AUTH_FAILURE_WINDOW", "CONFIG", "PROJECT", "REPO", "SECRET", "SERVED", "gunicorn_rss_mb",
           "predict_body", "record", "wait_until"]
