"""The backend served over HTTPS, as a hospital exposes it on its network: real Label Studio
(trusting the hospital's certificate authority) pre-annotates through it with basic auth; plain
HTTP, and a client that does not trust the authority, get nothing; the container's own command and
health check work over HTTPS. Certificates: tests/data/tls (test-only)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from backend.services import starter_version
from tests.conftest import TLS
from tests.e2e.conftest import (
    HTTPS,
    REPO,
    create_project,
    free_port,
    retrieve_predictions,
    start_backend,
    stored_predictions,
    wait_for,
)

pytestmark = pytest.mark.slow
USER, PASSWORD = "pm", "tls-s3cret"


def test_label_studio_pre_annotates_over_https_with_basic_auth(label_studio, classified_tiny_model, busbra_dir,
                                                              tmp_path):
    with start_backend(tmp_path, label_studio, INITIAL_WEIGHTS=str(classified_tiny_model), MAX_BOXES="2",
                       BASIC_AUTH_USER=USER, BASIC_AUTH_PASS=PASSWORD, **HTTPS) as backend:
        assert backend["url"].startswith("https://")
        health = requests.get(f"{backend['url']}/health", auth=(USER, PASSWORD), verify=backend["verify"], timeout=10)
        assert health.status_code == 200
        with pytest.raises(requests.exceptions.SSLError):  # a client that does not trust the authority
            requests.get(f"{backend['url']}/health", auth=(USER, PASSWORD), timeout=10)
        with pytest.raises(requests.exceptions.ConnectionError):  # nothing is answered in plain text
            requests.get(f"http://127.0.0.1:{backend['port']}/health", auth=(USER, PASSWORD), timeout=10)
        client, project, tasks = create_project(label_studio, busbra_dir / "Images", "HTTPS")
        client.ml.create(project=project, url=backend["url"], title="BI-RADS detector", is_interactive=False,
                         auth_method="BASIC_AUTH", basic_auth_user=USER, basic_auth_pass=PASSWORD)
        retrieve_predictions(client, project)
        stored = stored_predictions(client, project)
    assert set(stored) == set(tasks)
    for predictions in stored.values():  # every task pre-annotated by the starter model, over HTTPS
        assert predictions and predictions[-1]["model_version"] == starter_version(classified_tiny_model)
        assert len(predictions[-1]["result"]) == 2


def test_the_containers_server_command_and_health_check_serve_https(redis_server, tmp_path):
    """The Docker image's command (`python -m backend.serve --server-only`: gunicorn alone) and its
    health check (`python -m backend.healthcheck`), on one address only."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("BIND_HOST", "BASIC_AUTH_USER", "BASIC_AUTH_PASS")}
    env.update({"BIND_HOST": "127.0.0.1", "PORT": str(port), "MODEL_DIR": str(tmp_path / "models"),
                "REDIS_URL": redis_server, "PYTHONPATH": str(REPO), "WORKERS": "1", "THREADS": "2",
                "BASIC_AUTH_USER": USER, "BASIC_AUTH_PASS": PASSWORD, **HTTPS})
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "backend.serve", "--server-only"], env=env, cwd=REPO,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(f"https://127.0.0.1:{port}/health", 120, server, log, verify=str(TLS / "ca.pem"))
        # the process became gunicorn: nothing of the launcher (torch and all) stays beside it
        assert b"gunicorn" in Path(f"/proc/{server.pid}/cmdline").read_bytes()
        check = [sys.executable, "-m", "backend.healthcheck"]
        assert subprocess.run(check, env=env, capture_output=True, timeout=30).returncode == 0
        wrong = subprocess.run(check, env=env | {"BASIC_AUTH_PASS": "wrong"}, capture_output=True, text=True,
                               timeout=30)
        assert wrong.returncode == 1 and "401" in wrong.stderr
        plain = subprocess.run(check, env={k: v for k, v in env.items() if k != "TLS_CERT_FILE"},
                               capture_output=True, text=True, timeout=30)
        assert plain.returncode == 1  # HTTP to an HTTPS server
    finally:
        server.terminate()
        server.wait(timeout=30)
