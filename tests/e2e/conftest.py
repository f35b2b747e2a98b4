"""Real Label Studio 1.23.2 (its own venv, headless on 127.0.0.1) and our backend as `make run`
starts it: gunicorn, an RQ worker and the embedded Redis."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.conftest import TLS

REPO = Path(__file__).resolve().parents[2]
# what the backend serves HTTPS with in start_backend(..., **HTTPS)
HTTPS = {"TLS_CERT_FILE": str(TLS / "server.pem"), "TLS_KEY_FILE": str(TLS / "server.key")}
TOKEN = "e2e" + uuid.uuid4().hex[:21]
USERNAME, PASSWORD = "admin@example.com", "e2e-password-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float, process: subprocess.Popen, log: Path, verify: str | bool = True) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: process exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=2, verify=verify).status_code in (200, 401):  # up (401: behind basic auth)
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not up after {seconds} s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


@contextlib.contextmanager
def start_label_studio(data_dir: Path):
    """A fresh Label Studio 1.23.2 serving tests/data as local files: its URL, token and log."""
    bin_dir = subprocess.run([str(REPO / "scripts" / "ensure_label_studio.sh")], capture_output=True,
                             text=True, check=True, timeout=900).stdout.strip()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO", "DJANGO"))}
    env.update({
        "LABEL_STUDIO_USERNAME": USERNAME, "LABEL_STUDIO_PASSWORD": PASSWORD,
        "LABEL_STUDIO_USER_TOKEN": TOKEN, "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true", "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false", "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(REPO / "tests" / "data"),
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir), "COLLECT_ANALYTICS": "false",
        "LATEST_VERSION_CHECK": "false", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",
        # as a hospital's Label Studio trusts its own certificate authority: a backend may serve HTTPS
        "REQUESTS_CA_BUNDLE": str(TLS / "ca.pem")})
    log = data_dir / "label-studio.log"
    with open(log, "w") as out:
        process = subprocess.Popen([f"{bin_dir}/label-studio", "start", "--no-browser", "--internal-host",
                                    "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)],
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/health", 240, process, log)
        yield {"url": url, "token": TOKEN, "log": log}
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    with start_label_studio(tmp_path_factory.mktemp("label-studio")) as running:
        yield running


@contextlib.contextmanager
def start_backend(work: Path, label_studio: dict, **overrides: str):
    """`python -m backend.serve` (what `make run` starts) in ``work``, with tiny training settings;
    over HTTPS with ``**HTTPS`` among the overrides (its "verify": the certificate authority)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}  # embedded Redis
    env.update({
        "PORT": str(port), "MODEL_DIR": str(work / "models"), "LABEL_STUDIO_URL": label_studio["url"],
        "LABEL_STUDIO_API_KEY": label_studio["token"], "PYTHONPATH": str(REPO),
        "TRAIN_BASE_CONFIG": "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml", "TRAIN_IMAGE_SIZE": "160",
        "TRAIN_MAX_ITER": "6", "TRAIN_BATCH_SIZE": "2", "RETRAIN_AFTER": "1000", "HOLDOUT_FRACTION": "0",
        "SCORE_THRESHOLD": "0.05", "SHOW_BOXES": "threshold", "BF16": "false", "WORKERS": "1", "THREADS": "4",
        # one image per forward pass, as the tests' own Predictor reads them: a batch pads its images
        # to the largest, and a barely trained model's nearly equal scores then rank its boxes otherwise
        "PREDICT_BATCH": "1",
        **overrides})
    log = work / "backend.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "backend.serve"], env=env, cwd=REPO,
                                   stdout=out, stderr=subprocess.STDOUT)
    tls = "TLS_CERT_FILE" in overrides
    url, verify = f"{'https' if tls else 'http'}://127.0.0.1:{port}", str(TLS / "ca.pem") if tls else True
    try:
        wait_for(f"{url}/health", 120, process, log, verify)
        yield {"url": url, "model_dir": work / "models", "log": log, "pid": process.pid, "verify": verify,
               "port": port}
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def backend_server(tmp_path_factory, label_studio):
    with start_backend(tmp_path_factory.mktemp("backend"), label_studio) as backend:
        yield backend


CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="BI-RADS 2"/><Label value="BI-RADS 3"/><Label value="BI-RADS 4"/><Label value="BI-RADS 5"/>
  </RectangleLabels>
</View>"""
IMAGES = ["bus_0090-r.png", "bus_0224-r.png", "bus_0165-r.png", "bus_0084-r.png"]


def create_project(label_studio: dict, images_dir: Path, title: str) -> tuple[object, int, dict]:
    """A Label Studio project with IMAGES uploaded as a user would. Returns client, id, tasks."""
    from label_studio_sdk import LabelStudio

    client = LabelStudio(base_url=label_studio["url"], api_key=label_studio["token"])
    project = client.projects.create(title=title, label_config=CONFIG).id
    files = [(f"file{i}", (name, open(images_dir / name, "rb"), "image/png")) for i, name in enumerate(IMAGES)]
    upload = requests.post(f"{label_studio['url']}/api/projects/{project}/import", files=files, timeout=60,
                           headers={"Authorization": f"Token {label_studio['token']}"})
    assert upload.status_code == 201, upload.text
    tasks = {t.id: t for t in client.tasks.list(project=project, fields="all")}
    return client, project, tasks


def image_name(task) -> str:
    return next(n for n in IMAGES if task.data["image"].endswith(n))


def annotate(client, project: int, tasks: dict, images_dir: Path) -> None:
    """Experts' boxes (from the dataset's masks) submitted through the API."""
    from model import datasets
    from model.datasets.export import labelstudio_regions

    truth = {Path(r.path).name: r for r in datasets.load(f"busbra:{images_dir.parent}")}
    for task in tasks.values():
        regions = labelstudio_regions(truth[image_name(task)], "label", "image")
        client.annotations.create(id=task.id, result=regions, project=project)


def stored_predictions(client, project: int) -> dict[int, list[dict]]:
    tasks = client.tasks.list(project=project, fields="all")
    return {t.id: [p.model_dump() if hasattr(p, "model_dump") else dict(p) for p in (t.predictions or [])]
            for t in tasks}


def retrieve_predictions(client, project: int) -> None:
    """The Data Manager action "Retrieve predictions"."""
    client.actions.create(id="retrieve_tasks_predictions", project=project,
                          selected_items={"all": True, "excluded": []})
