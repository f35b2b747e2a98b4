"""`make run` (backend.serve): what it starts and refuses, without starting a server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend.serve import GRACEFUL_S, SERVER_STOP_WAIT_S, ModelDirInUse, gunicorn_command, hold_model_dir
from backend.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_a_second_make_run_on_one_model_dir_is_refused_before_it_touches_the_first_ones_redis(tmp_path):
    """It would attach to the first one's embedded Redis and shut it down as it exits."""
    handle = hold_model_dir(tmp_path / "models")
    try:
        with pytest.raises(ModelDirInUse, match="another `make run` serves MODEL_DIR="):
            hold_model_dir(tmp_path / "models")
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        done = subprocess.run([sys.executable, "-m", "backend.serve"], cwd=REPO, capture_output=True, text=True,
                              env=dict(env, PYTHONPATH=str(REPO), MODEL_DIR=str(tmp_path / "models"), PORT="1"),
                              timeout=120)
        assert done.returncode == 2 and "backend not started: another `make run` serves MODEL_DIR=" in done.stderr
        assert not (tmp_path / "models" / "queue.rdb").exists()  # no Redis was started, none attached to
    finally:
        os.close(handle)
    os.close(hold_model_dir(tmp_path / "models"))  # free again once the first has ended


def test_gunicorn_finishes_its_requests_within_the_time_make_run_gives_it():
    command = gunicorn_command(Settings())
    assert command[command.index("--graceful-timeout") + 1] == str(GRACEFUL_S) and GRACEFUL_S < SERVER_STOP_WAIT_S
