"""End to end with real Label Studio 1.23.2: pre-annotate, annotate, "Start training", re-predict.

Everything real: Label Studio (headless), our gunicorn server, RQ worker and embedded Redis as
`make run` starts them, real ultrasound images, a real (tiny) training run.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from backend.services import starter_version
from model.predict import Predictor
from model.records import BOX_VOTING_IOU
from tests.e2e.conftest import (
    CONFIG,
    annotate,
    create_project,
    image_name,
    retrieve_predictions,
    start_backend,
    stored_predictions,
)

pytestmark = pytest.mark.slow


def _wait_for_job(backend: dict, project: int, seconds: float = 600) -> dict:
    deadline = time.time() + seconds
    while time.time() < deadline:
        jobs = requests.get(f"{backend['url']}/jobs", params={"project": project}, timeout=5).json()["jobs"]
        if jobs and jobs[0]["status"] in ("finished", "failed"):
            return jobs[0]
        time.sleep(2)
    raise TimeoutError(f"training job not done:\n{Path(backend['log']).read_text()[-4000:]}")


def _as_served(model_dir: Path) -> Predictor:
    """The model read as the e2e backend reads it (backend/detector.py: boxes down to 0.05, at
    least 20 of them, box voting), before the display keeps the first MAX_BOXES."""
    return Predictor(model_dir, score_threshold=0.05, max_boxes=20, bf16=False, box_voting_iou=BOX_VOTING_IOU)


def test_predict_train_predict_round_trip(label_studio, backend_server, busbra_dir):
    images = busbra_dir / "Images"
    client, project, tasks = create_project(label_studio, images, "BI-RADS e2e")
    assert len(tasks) == 4
    ml = client.ml.create(project=project, url=backend_server["url"], title="BI-RADS detector",
                          is_interactive=False)

    # Before training: predictions are stored, empty, with the explicit "untrained" version.
    retrieve_predictions(client, project)
    stored = stored_predictions(client, project)
    assert all(p and p[-1]["model_version"] == "untrained" and p[-1]["result"] == [] for p in stored.values())

    # Experts annotate every task, then press "Start training".
    annotate(client, project, tasks, images)
    client.ml.train(id=ml.id)
    job = _wait_for_job(backend_server, project)
    assert job["status"] == "finished", job
    version = job["result"]["version"]
    assert job["result"]["train_images"] == 4 and job["result"]["parent"] is None

    # /setup now answers the new version, and Label Studio fetches predictions of that version.
    setup = requests.post(f"{backend_server['url']}/setup", json={"project": f"{project}.0", "schema": CONFIG},
                          timeout=30).json()
    assert setup["model_version"] == version
    retrieve_predictions(client, project)
    stored = stored_predictions(client, project)
    model_dir = backend_server["model_dir"] / f"project-{project}" / "versions" / version
    local = _as_served(model_dir)
    for task_id, predictions in stored.items():
        latest = [p for p in predictions if p["model_version"] == version]
        assert latest, predictions
        regions = latest[-1]["result"]
        [detection] = local([images / image_name(tasks[task_id])])
        shown = detection.boxes[:5]  # MAX_BOXES' default, every box above SCORE_THRESHOLD=0.05
        assert len(regions) == len(shown)  # the boxes come from the trained model
        for region, box in zip(regions, shown):
            assert region["value"]["x"] == pytest.approx(100 * box.x0 / detection.width, abs=0.01)
            assert region["value"]["rectanglelabels"] == [f"BI-RADS {box.category}"]
    # Six iterations from random weights rarely score a box above the 0.05 shown: where none is,
    # the comparison above had nothing to compare, and the starter-model test below compares the
    # boxes one by one. What this test proves is the new version's hand-over.


def test_personal_access_token_is_refreshed_for_images_and_api(label_studio, busbra_dir):
    """LABEL_STUDIO_API_KEY may be a personal access token: the SDK trades it for access tokens."""
    from backend.images import ImageFetcher
    from backend.labelstudio import LabelStudioAPI

    legacy = {"Authorization": f"Token {label_studio['token']}"}
    settings = requests.post(f"{label_studio['url']}/api/jwt/settings", headers=legacy, timeout=30,
                             json={"api_tokens_enabled": True, "legacy_api_tokens_enabled": True})
    assert settings.ok, settings.text
    created = requests.post(f"{label_studio['url']}/api/token/", headers=legacy, timeout=30)
    assert created.ok, created.text
    pat = created.json()["token"]
    client, project, tasks = create_project(label_studio, busbra_dir / "Images", "PAT")
    api = LabelStudioAPI(label_studio["url"], pat)
    assert api.auth_headers()["Authorization"].startswith("Bearer ")
    fetcher = ImageFetcher(label_studio["url"], api.auth_headers)
    task = next(iter(tasks.values()))
    assert fetcher.fetch(task.data["image"]).ndim == 3
    annotate(client, project, tasks, busbra_dir / "Images")
    assert len(api.annotated_tasks(project)) == 4


@pytest.fixture(scope="module")
def classified_backend(tmp_path_factory, label_studio, classified_tiny_model):
    """One backend serving the starter model with a box classifier, at most three boxes an image,
    for the tests below that only pre-annotate (each in its own project): a start costs seconds."""
    with start_backend(tmp_path_factory.mktemp("classified-backend"), label_studio,
                       INITIAL_WEIGHTS=str(classified_tiny_model), MAX_BOXES="3") as backend:
        yield backend


def test_label_studio_keeps_each_boxs_malignancy_from_a_model_with_a_box_classifier(
        label_studio, classified_backend, classified_tiny_model, busbra_dir):
    """A starter model with a box classifier: Label Studio stores each region's P(malignant) in
    the region's meta text (shown in the region's details), as the backend sent it."""
    import re

    client, project, tasks = create_project(label_studio, busbra_dir / "Images", "Malignancy")
    client.ml.create(project=project, url=classified_backend["url"], title="BI-RADS detector", is_interactive=False)
    retrieve_predictions(client, project)
    stored = stored_predictions(client, project)
    note = re.compile(r"P\(malignant\) (\d\.\d\d), model estimate")
    regions = [r for predictions in stored.values() for r in predictions[-1]["result"]]
    assert all(p[-1]["model_version"] == starter_version(classified_tiny_model) for p in stored.values())
    assert len(regions) == 3 * len(tasks)  # the boxes the backend showed, each with its figure
    # box by box, what Label Studio stored is what the model finds (the round trip's model, six
    # iterations from random weights, shows no box to compare)
    local = _as_served(classified_tiny_model)
    for task_id, predictions in stored.items():
        [detection] = local([busbra_dir / "Images" / image_name(tasks[task_id])])
        shown = detection.boxes[:3]  # MAX_BOXES=3, every box above SCORE_THRESHOLD=0.05
        served = predictions[-1]["result"]
        assert [r["value"]["x"] for r in served] == pytest.approx([100 * b.x0 / detection.width
                                                                  for b in shown], abs=0.01)
        assert [r["value"]["rectanglelabels"] for r in served] == [[f"BI-RADS {b.category}"] for b in shown]
    for region in regions:
        [text] = region["meta"]["text"]
        assert note.fullmatch(text) and 0.0 <= float(note.fullmatch(text).group(1)) <= 1.0


def test_one_unreadable_image_costs_its_own_task_only(label_studio, classified_backend, classified_tiny_model,
                                                      busbra_dir):
    """"Retrieve predictions" sends every task in one request: a task whose image is gone gets no
    prediction (Label Studio asks again later), and every other task gets its own."""
    client, project, tasks = create_project(label_studio, busbra_dir / "Images", "One image gone")
    broken = client.tasks.create(project=project, data={"image": f"/data/upload/{project}/gone.png"}).id
    client.ml.create(project=project, url=classified_backend["url"], title="BI-RADS detector", is_interactive=False)
    retrieve_predictions(client, project)
    stored = stored_predictions(client, project)
    log = classified_backend["log"].read_text()
    assert stored[broken] == []
    assert all(stored[task][-1]["model_version"] == starter_version(classified_tiny_model) for task in tasks)
    assert f"task {broken}: " in log and "no prediction for it" in log


def test_retrieve_predictions_again_goes_on_where_the_time_budget_stopped(label_studio, classified_tiny_model,
                                                                         busbra_dir, tmp_path):
    """A project too large for one /predict within Label Studio's 100 s: each "Retrieve
    predictions" stores what fit, and the next one sends only the tasks still without one."""
    with start_backend(tmp_path, label_studio, INITIAL_WEIGHTS=str(classified_tiny_model),
                       PREDICT_TIME_BUDGET="0.000001") as backend:
        client, project, tasks = create_project(label_studio, busbra_dir / "Images", "Time budget")
        client.ml.create(project=project, url=backend["url"], title="BI-RADS detector", is_interactive=False)
        stored_after = []
        for _ in range(2):
            retrieve_predictions(client, project)
            stored_after.append(sum(bool(p) for p in stored_predictions(client, project).values()))
    assert stored_after == [1, 2]  # PREDICT_BATCH=1: one task per request, never the same one twice
