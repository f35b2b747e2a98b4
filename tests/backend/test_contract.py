"""Replay what real Label Studio 1.23.2 sent (recorded in tests/backend/requests) against the app.

Real Redis underneath; no worker runs here, so queued jobs stay queued (coalescing is visible).
"""

from __future__ import annotations

import base64
import copy
import shutil
import time
from dataclasses import replace
from types import SimpleNamespace

import pytest
from rq import Queue

from backend.app import create_app
from backend.services import starter_version
from model.registry import Registry
from tests.backend.conftest import install_model, recorded

CONFIG = recorded("setup")["body"]["schema"]


def replay(client, name: str, body: dict | None = None, headers: dict | None = None):
    request = recorded(name)
    body = request.get("body") if body is None else body
    if request["method"] == "GET":
        return client.get(request["path"], headers=headers)
    return client.post(request["path"], json=body, headers=headers)


def connect(client, project: int = 2, headers: dict | None = None) -> None:
    """What Label Studio does first for a project: /setup (the recorded webhooks are project 2's)."""
    body = dict(recorded("setup")["body"], project=f"{project}.1795633085")
    assert client.post("/setup", json=body, headers=headers).status_code == 200


def test_health_names_what_is_degraded_and_still_answers_200(client):
    response = replay(client, "health")
    assert response.status_code == 200  # Label Studio only accepts a 200
    answer = response.get_json()
    # no RQ worker runs in these tests: the queue is up, training would wait
    assert answer["status"] == "DEGRADED" and list(answer["degraded"]) == ["workers"]
    assert "none listening" in answer["degraded"]["workers"]


def test_health_names_an_initial_weights_folder_that_holds_no_model(settings, tmp_path, tiny_model):
    """A starter folder mounted empty (or a mistyped path) would quietly serve no boxes."""
    from backend.status import starter_parts

    empty = tmp_path / "starter-model"
    empty.mkdir()
    answer = create_app(replace(settings, initial_weights=str(empty))).test_client().get("/health").get_json()
    assert answer["status"] == "DEGRADED" and "a folder without a model" in answer["degraded"]["starter model"]
    assert "model_final.pth" in answer["degraded"]["starter model"]
    assert "not found" in starter_parts(str(tmp_path / "typo"))[0].detail
    assert [part.ok for part in starter_parts(str(tiny_model))] == [True]
    weights = tmp_path / "backbone.pth"
    weights.write_bytes(b"weights")  # a start for the first training only: nothing to serve, nothing wrong
    assert [part.ok for part in starter_parts(str(weights))] == [True]
    assert starter_parts("") == starter_parts("zoo:COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml") == []


def test_setup_answers_untrained_version_and_remembers_config(client, settings):
    response = replay(client, "setup")
    assert response.status_code == 200
    assert response.get_json() == {"model_version": "untrained"}
    assert (settings.model_dir / "project-1" / "label_config.xml").read_text() == CONFIG


def test_served_weights_are_checked_at_start_not_on_the_first_health(settings, tiny_model):
    from model import registry as registry_module

    install_model(settings, 4, tiny_model, "v1")
    weights = Registry(settings.model_dir / "project-4").path("v1").resolve()
    registry_module._verified.clear()
    app = create_app(settings)
    app.config["verifier"].join(timeout=60)
    assert any(key[0] == str(weights) and verdict is None for key, verdict in registry_module._verified.items())


def test_setup_answers_the_served_version(client, settings, tiny_model):
    install_model(settings, 1, tiny_model, "v20261125-120000")
    assert replay(client, "setup").get_json() == {"model_version": "v20261125-120000"}


@pytest.mark.parametrize("name", ["predict_single", "predict_batch"])
def test_predict_before_training_gives_no_boxes_with_explicit_version(client, name):
    request = recorded(name)
    response = replay(client, name)
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert len(results) == len(request["body"]["tasks"])
    assert all(r == {"result": [], "score": 0.0, "model_version": "untrained"} for r in results)


def test_a_starter_model_is_served_until_the_project_trains_its_own(settings, tiny_model, busbra_dir):
    """INITIAL_WEIGHTS naming a model directory pre-annotates a new project from its first task."""
    client = create_app(replace(settings, initial_weights=str(tiny_model), score_threshold=0.0)).test_client()
    starter = starter_version(tiny_model)
    assert starter.startswith("starter-model-") and replay(client, "setup").get_json() == {"model_version": starter}
    body = copy.deepcopy(recorded("predict_batch")["body"])
    body["tasks"] = _local_tasks(busbra_dir, ["bus_0859-l.png", "bus_0084-r.png"])
    answer = client.post("/predict", json=body).get_json()
    assert [r["model_version"] for r in answer["results"]] == [starter] * 2
    install_model(settings, 1, tiny_model, "v20261126-090000")  # the project's own version wins
    assert replay(client, "setup").get_json() == {"model_version": "v20261126-090000"}
    checkpoint_only = create_app(replace(settings, model_dir=settings.model_dir.with_name("fresh"),
                                         initial_weights=str(tiny_model / "model_final.pth")))
    assert replay(checkpoint_only.test_client(), "setup").get_json() == {"model_version": "untrained"}


def test_a_starter_filled_or_replaced_in_place_is_served_without_a_restart(settings, tiny_model, tmp_path):
    """A starter volume mounted empty and filled later serves at once (its /health turns UP then
    too); one replaced in place is a new version, so Label Studio asks again and the old weights go."""
    import json

    starter = tmp_path / "starter"
    starter.mkdir()
    app = create_app(replace(settings, initial_weights=str(starter)))
    client, models = app.test_client(), app.config["backend"].models
    assert replay(client, "setup").get_json() == {"model_version": "untrained"}
    shutil.copytree(tiny_model, starter, dirs_exist_ok=True)
    first = starter_version(starter)
    assert replay(client, "setup").get_json() == {"model_version": first}
    version, loaded, _ = models.get(1)
    info = json.loads((starter / "model.json").read_text())
    (starter / "model.json").write_text(json.dumps({**info, "created_at": "2026-12-06T14:00:00"}))
    second = starter_version(starter)
    assert second != first and second.startswith("starter-starter-")
    assert replay(client, "setup").get_json() == {"model_version": second}
    version, reloaded, _ = models.get(1)
    assert version == second and reloaded is not loaded
    (starter / "screening_cut.json").write_text("{}")  # a file added beside it: changed too
    assert starter_version(starter) != second


def test_a_starter_model_that_fails_to_load_is_reported_not_served_as_untrained(settings, tiny_model, tmp_path):
    """Corrupt weights under INITIAL_WEIGHTS: 503 with the reason and a degraded /health, never
    empty "untrained" predictions that Label Studio would store."""
    broken = tmp_path / "starter"
    shutil.copytree(tiny_model, broken)
    (broken / "model_final.pth").write_bytes(b"not a checkpoint")
    client = create_app(replace(settings, initial_weights=str(broken))).test_client()
    version = starter_version(broken)
    assert replay(client, "setup").get_json() == {"model_version": version}  # not loaded yet
    response = client.post("/predict", json=recorded("predict_single")["body"])
    reason = f"starter model {version} cannot be loaded"
    assert response.status_code == 503 and reason in response.get_json()["error"]
    assert replay(client, "setup").status_code == 503  # from then on, for every project on it
    health = client.get("/health").get_json()
    assert health["status"] == "DEGRADED" and reason in health["degraded"]["project 1"]


def test_projects_on_one_starter_share_one_loaded_model_and_old_ones_are_let_go(settings, tiny_model):
    """Ten projects on the starter hold one R101 in memory, not ten; a version no project serves
    any more is dropped."""
    models = create_app(replace(settings, initial_weights=str(tiny_model))).config["backend"].models
    (version, starter, lock), (_, same, same_lock) = models.get(1), models.get(2)
    assert version == starter_version(tiny_model) and starter is same and lock is same_lock
    install_model(settings, 2, tiny_model, "v-own")
    own_version, own, _ = models.get(2)
    assert own_version == "v-own" and own is not starter
    assert models.get(1)[1] is starter  # project 1 is still on the starter: kept
    install_model(settings, 1, tiny_model, "v-own")
    assert models.get(1)[1] not in (starter, own)
    assert all(predictor is not starter for predictor, _ in models._loaded.values())  # nobody serves it now


def test_a_version_that_failed_to_load_once_is_tried_again_later(settings, tiny_model):
    """A load that failed for a passing reason (memory, a network disk) does not bar the version for
    the life of the process: the last good one is served meanwhile, then it is tried again."""
    models = create_app(settings).config["backend"].models
    install_model(settings, 1, tiny_model, "v-good")
    install_model(settings, 1, tiny_model, "v-new")
    real_load, failures = models._load, []

    def load_failing_once(path):  # the neighbour fails once, as an out-of-memory would
        if path.name == "v-new" and not failures:
            failures.append(path)
            raise MemoryError("passing")
        return real_load(path)

    models._load = load_failing_once
    assert models.get(1)[0] == "v-good" and failures
    assert models.get(1)[0] == "v-good"  # within RELOAD_AFTER_S: not tried again
    models.RELOAD_AFTER_S = 0.0
    assert "version v-new cannot be loaded" in models.serving(1).problem  # /health says so until a retry
    assert models.get(1)[0] == "v-new" and models.serving(1).problem is None


def test_a_version_promoted_while_an_older_one_loads_is_the_one_served(settings, tiny_model):
    """A request that chose a version just before a promotion does not put it back in service (and
    in memory) once it has loaded: it serves the new one."""
    models = create_app(settings).config["backend"].models
    install_model(settings, 1, tiny_model, "v-old")
    real_load = models._load

    def load_while_promoting(path):
        if path.name == "v-old":
            install_model(settings, 1, tiny_model, "v-new")  # promoted while v-old loads
        return real_load(path)

    models._load = load_while_promoting
    version, predictor, _ = models.get(1)
    assert version == "v-new"
    assert [key[0] for key in models._loaded] == ["v-new"]


def test_loading_one_version_holds_up_no_other_projects_requests(settings, tiny_model):
    import threading

    models = create_app(settings).config["backend"].models
    install_model(settings, 1, tiny_model, "v-one")
    install_model(settings, 2, tiny_model, "v-two")
    assert models.get(2)[0] == "v-two"
    started, release, real_load = threading.Event(), threading.Event(), models._load

    def slow_load(path):
        started.set()
        assert release.wait(30)
        return real_load(path)

    models._load = slow_load
    loader = threading.Thread(target=models.get, args=(1,))
    loader.start()
    try:
        assert started.wait(30)
        assert models.get(2)[0] == "v-two"  # answered while project 1's model is still loading
        assert loader.is_alive() and not release.is_set()
    finally:
        release.set()
        loader.join(60)
    assert models.get(1)[0] == "v-one"


def _pathology_head_at_one_half(model_dir, out):
    """A copy of ``model_dir`` whose box classifier's pathology head says 0.5 of every box."""
    import torch

    from model.box_classifier import WEIGHTS

    copy_dir = shutil.copytree(model_dir, out)
    weights = copy_dir / "box_classifier" / WEIGHTS
    state = torch.load(weights, map_location="cpu", weights_only=True)
    state["malignant.weight"].zero_()
    state["malignant.bias"].zero_()
    torch.save(state, weights)
    return copy_dir


def test_predict_shows_each_boxs_malignancy_where_the_model_has_a_box_classifier(
        settings, classified_tiny_model, busbra_dir, tmp_path):
    from model.evaluation.evaluate import LOW_SCORE
    from model.predict import Predictor
    from model.regions import malignancy_note

    names = ["bus_0859-l.png", "bus_0084-r.png"]
    body = copy.deepcopy(recorded("predict_batch")["body"])
    body["tasks"] = _local_tasks(busbra_dir, names)
    install_model(settings, 2, classified_tiny_model, "with-classifier")
    served = replace(settings, score_threshold=0.0, max_boxes=3, show_boxes="threshold", bf16="false")
    app = create_app(served).test_client()
    answer = app.post("/predict", json=body).get_json()
    local = Predictor(classified_tiny_model, score_threshold=LOW_SCORE, max_boxes=20, bf16=False,
                      box_voting_iou=served.box_voting)
    detections = local([busbra_dir / "Images" / n for n in names], batch_size=served.predict_batch)
    shown = 0
    for prediction, detection in zip(answer["results"], detections):
        assert [r["meta"]["text"] for r in prediction["result"]] == \
            [[malignancy_note(m)] for m in detection.malignancy[:3]]  # each region its own box's
        shown += len(prediction["result"])
    assert shown > 0
    # MALIGNANCY_READING=mean: each note the classifier's P(malignant) averaged with the box's
    # categories. The barely trained head says about 0.00 everywhere, so here it says 0.50, and
    # the mean shows whatever mass the box's class scores put at 4 or above
    halfway = _pathology_head_at_one_half(classified_tiny_model, tmp_path / "halfway")
    install_model(settings, 4, halfway, "halfway")
    images = [busbra_dir / "Images" / n for n in names]
    notes = {}
    for reading in ("pathology", "mean"):
        answer = create_app(replace(served, malignancy_reading=reading)).test_client().post(
            "/predict", json=dict(body, project="4.1795633085")).get_json()
        local = Predictor(halfway, score_threshold=LOW_SCORE, max_boxes=20, bf16=False,
                          box_voting_iou=served.box_voting, malignancy_reading=reading)
        for prediction, detection in zip(answer["results"], local(images, batch_size=served.predict_batch)):
            assert [r["meta"]["text"] for r in prediction["result"]] == \
                [[malignancy_note(m)] for m in detection.malignancy[:3]]
        notes[reading] = [r["meta"]["text"] for p in answer["results"] for r in p["result"]]
    assert notes["pathology"] and set(map(tuple, notes["pathology"])) == {(malignancy_note(0.5),)}
    assert notes["mean"] != notes["pathology"]
    detector_alone = shutil.copytree(classified_tiny_model, tmp_path / "alone")
    shutil.rmtree(detector_alone / "box_classifier")
    install_model(settings, 3, detector_alone, "without")  # no classifier: no meta
    # named by argmax: the untrained detector's softmax is near flat, its median a BI-RADS 4 this
    # project's labels (2, 3, 4A, 5) cannot show
    app = create_app(replace(served, category_reading="argmax")).test_client()
    plain = app.post("/predict", json=dict(body, project="3.1795633085")).get_json()
    assert plain["results"][0]["result"] and all("meta" not in r for p in plain["results"] for r in p["result"])


def _served_lefts(settings, model, busbra_dir, setting: dict, predictor: dict) -> list[list[float]]:
    """Each task's shown boxes' left edges (% of the width) from /predict served with ``setting``,
    checked against a local predictor made with ``predictor``: the setting reached the served one.
    ``model`` is project 2's, installed."""
    from model.evaluation.evaluate import LOW_SCORE
    from model.predict import Predictor

    names = ["bus_0859-l.png", "bus_0084-r.png"]
    body = copy.deepcopy(recorded("predict_batch")["body"])
    body["tasks"] = _local_tasks(busbra_dir, names)
    shown = replace(settings, score_threshold=0.0, max_boxes=3, show_boxes="threshold", bf16="false", **setting)
    answer = create_app(shown).test_client().post("/predict", json=body).get_json()
    local = Predictor(model, score_threshold=LOW_SCORE, max_boxes=20, bf16=False,
                      **{"box_voting_iou": shown.box_voting, **predictor})
    lefts = [[r["value"]["x"] for r in p["result"]] for p in answer["results"]]
    for xs, detection in zip(lefts, local([busbra_dir / "Images" / n for n in names])):
        assert xs == pytest.approx([100 * b.x0 / detection.width for b in detection.boxes[:3]], abs=0.01)
    return lefts


def test_predict_places_boxes_by_the_vote_unless_box_voting_iou_is_0(settings, classified_tiny_model, busbra_dir):
    install_model(settings, 2, classified_tiny_model)
    voted, unvoted = (_served_lefts(settings, classified_tiny_model, busbra_dir, {"box_voting_iou": iou},
                                    {"box_voting_iou": voting}) for iou, voting in ((0.5, 0.5), (0.0, None)))
    assert voted != unvoted and any(unvoted)  # boxes shown, and the vote moved them


def test_predict_reads_predict_proposals_of_the_rpn(settings, classified_tiny_model, busbra_dir):
    """PREDICT_PROPOSALS reaches the served predictor: its boxes are the local predictor's at that count."""
    install_model(settings, 2, classified_tiny_model)
    own, two = (_served_lefts(settings, classified_tiny_model, busbra_dir, {"predict_proposals": count},
                              {"proposals": count or None}) for count in (0, 2))  # the default (its own 50), two
    assert two != own and any(two)


def _local_tasks(busbra_dir, names: list[str]) -> list[dict]:
    return [{"id": 100 + i, "data": {"image": str(busbra_dir / "Images" / n)}} for i, n in enumerate(names)]


def test_predict_with_a_model_returns_label_studio_regions_in_order(client, settings, classified_tiny_model,
                                                                    busbra_dir):
    install_model(settings, 2, classified_tiny_model)  # its boxes score high enough to be shown
    body = copy.deepcopy(recorded("predict_batch")["body"])
    names = ["bus_0859-l.png", "bus_0084-r.png", "bus_1042-r.png"]
    body["tasks"] = _local_tasks(busbra_dir, names)
    app = create_app(replace(settings, score_threshold=0.0, max_boxes=3)).test_client()
    response = app.post("/predict", json=body)
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert answer["model_version"] == "v-test" and len(answer["results"]) == 3
    labels = {"BI-RADS 2", "BI-RADS 3", "BI-RADS 4A", "BI-RADS 5"} & set(CONFIG.split('"'))
    for prediction, name in zip(answer["results"], names):
        assert prediction["model_version"] == "v-test"
        assert 0.0 <= prediction["score"] <= 1.0
        assert 1 <= len(prediction["result"]) <= 3  # regions to check, at most max_boxes
        from PIL import Image

        width, height = Image.open(busbra_dir / "Images" / name).size
        for region in prediction["result"]:
            assert region["from_name"] == "label" and region["to_name"] == "image"
            assert region["type"] == "rectanglelabels"
            # the task's own image: results come back in the tasks' order (the three differ in size)
            assert (region["original_width"], region["original_height"]) == (width, height)
            value = region["value"]
            assert value["rectanglelabels"][0] in labels  # only labels of the config
            assert 0 <= value["x"] <= 100 and 0 <= value["y"] <= 100
            assert value["x"] + value["width"] <= 100.01 and value["y"] + value["height"] <= 100.01
            assert 0 <= region["score"] <= 1


def test_webhook_annotation_events_wait_for_enough_changes(client, settings, redis_conn):
    connect(client)
    queue = Queue(settings.queue_name, connection=redis_conn)
    answers = [replay(client, "webhook_ANNOTATION_CREATED") for _ in range(2)]
    assert [a.get_json()["status"] for a in answers] == ["waiting", "waiting"]
    assert len(queue) == 0
    third = replay(client, "webhook_ANNOTATION_UPDATED")  # RETRAIN_AFTER=3 in these tests
    assert third.status_code == 201 and third.get_json()["status"] == "queued"
    assert len(queue) == 1


def test_start_training_bursts_coalesce_into_one_queued_job(client, settings, redis_conn):
    connect(client)
    queue = Queue(settings.queue_name, connection=redis_conn)
    answers = [replay(client, "webhook_START_TRAINING").get_json() for _ in range(12)]
    assert answers[0]["status"] == "queued"
    assert all(a["status"] == "coalesced" and a["job_id"] == answers[0]["job_id"] for a in answers[1:])
    assert len(queue) == 1
    job = queue.jobs[0]
    assert job.args == (2,)  # the project and nothing a webhook said
    status = client.get(f"/jobs/{job.id}").get_json()
    assert status["status"] == "queued" and status["progress"]["events"] == 12


def test_a_webhook_that_cannot_take_the_projects_lock_answers_503_within_a_second(client, settings, redis_conn):
    """Label Studio drops a webhook answered after 1 s: one stuck behind the project's lock (held
    here as another request would hold it) gives up after 0.5 s with a 503, queueing nothing."""
    connect(client)
    lock = redis_conn.lock(f"birads:{settings.queue_name}:project:2:lock", timeout=30)
    assert lock.acquire(blocking=False)
    try:
        started = time.monotonic()
        response = replay(client, "webhook_START_TRAINING")
        waited = time.monotonic() - started
    finally:
        lock.release()
    assert response.status_code == 503 and "training queue unavailable" in response.get_json()["error"]
    assert 0.4 < waited  # it waited for the lock (0.5 s) before giving up
    assert len(Queue(settings.queue_name, connection=redis_conn)) == 0
    assert replay(client, "webhook_START_TRAINING").status_code == 201  # free again: queued


def test_legacy_train_requests_queue_a_job_as_start_training_does(client, settings, redis_conn):
    """Label Studio with its webhook flag off sends "Start training" as POST /train (train.json)."""
    queue = Queue(settings.queue_name, connection=redis_conn)
    assert replay(client, "train").status_code == 404  # not connected: creates nothing
    connect(client)
    first, second = replay(client, "train"), replay(client, "train")
    assert first.status_code == 201 and first.get_json()["status"] == "queued"
    assert second.status_code == 200 and second.get_json()["job_id"] == first.get_json()["job_id"]
    assert len(queue) == 1 and queue.jobs[0].args == (2,)
    assert replay(client, "train", body=[]).status_code == 400  # not an object


def test_a_deleted_annotation_counts_toward_retraining(client, settings, redis_conn):
    connect(client)
    answers = [replay(client, "webhook_ANNOTATIONS_DELETED").get_json() for _ in range(3)]
    assert [a["status"] for a in answers] == ["waiting", "waiting", "queued"]  # RETRAIN_AFTER=3


def test_deleted_tasks_count_toward_retraining(client, settings, redis_conn):
    """Deleting tasks deletes their annotations, and Label Studio sends TASKS_DELETED alone (ids only,
    nothing of whether they were annotated): each task counts, as a deleted annotation would."""
    connect(client)
    deleted = recorded("webhook_TASKS_DELETED")["body"]
    assert replay(client, "webhook_TASKS_DELETED").get_json() == {"status": "waiting", "changes": 1,
                                                                  "retrain_after": 3}
    two = dict(deleted, tasks=[{"id": 3}, {"id": 4}])
    assert replay(client, "webhook_TASKS_DELETED", body=two).get_json()["status"] == "queued"


def test_bulk_created_annotations_count_each_and_a_skipped_task_none(client, settings, redis_conn):
    """"Create Annotations From Predictions" sends one ANNOTATIONS_CREATED listing them all (Label
    Studio's WebhookAction: key "annotation", many); skipping a task creates a cancelled annotation,
    nothing to learn from."""
    connect(client)
    created = recorded("webhook_ANNOTATION_CREATED")["body"]
    skipped = copy.deepcopy(created)
    skipped["annotation"]["was_cancelled"] = True
    answers = [replay(client, "webhook_ANNOTATION_CREATED", body=skipped).get_json() for _ in range(3)]
    assert all(a["status"] == "ignored" and "skipped" in a["why"] for a in answers)
    elsewhere = dict(skipped, project=99)  # a project never set up: 404, as for any other webhook
    assert replay(client, "webhook_ANNOTATION_CREATED", body=elsewhere).status_code == 404
    bulk = dict(created, action="ANNOTATIONS_CREATED", annotation=[created["annotation"]] * 2)
    assert replay(client, "webhook_ANNOTATION_CREATED", body=bulk).get_json() == {
        "status": "waiting", "changes": 2, "retrain_after": 3}
    assert replay(client, "webhook_ANNOTATION_CREATED", body=bulk).get_json()["status"] == "queued"
    flood = dict(bulk, annotation=[created["annotation"]] * 50)  # one webhook counts RETRAIN_AFTER at most
    assert replay(client, "webhook_ANNOTATION_CREATED", body=flood).get_json()["status"] == "coalesced"
    assert int(redis_conn.get(f"birads:{settings.queue_name}:project:2:changes")) == 2 + 2 + 3


def test_an_interactive_predict_request_is_answered_as_a_plain_one(client):
    """A predict request with ``params.context`` (a user's click) gets the model's boxes for the
    task, as without it: this backend has no interactive mode."""
    connect(client)
    response = replay(client, "predict_interactive")
    assert response.status_code == 200, response.get_json()
    [result] = response.get_json()["results"]
    assert result["model_version"] == "untrained" and result["result"] == []


@pytest.mark.parametrize("name", ["webhook_TASKS_CREATED", "webhook_PROJECT_UPDATED"])
def test_other_webhooks_are_acknowledged_and_ignored(client, settings, redis_conn, name):
    response = replay(client, name)
    assert response.status_code == 200 and response.get_json()["status"] == "ignored"
    assert len(Queue(settings.queue_name, connection=redis_conn)) == 0


def test_versions_lists_registered_versions(client, settings, tiny_model):
    assert replay(client, "versions").get_json()["versions"] == []
    install_model(settings, 2, tiny_model, "v1")
    answer = replay(client, "versions").get_json()
    assert answer["versions"] == ["v1"] and answer["details"][0]["current"] is True
    # a version's task lists grow with the project: in its version.json, not in every listing
    registry = Registry(settings.model_dir / "project-2")
    registry.describe("v1", train_images=2, train_tasks={"1": [10], "2": [11]}, holdout_tasks={})
    [details] = replay(client, "versions").get_json()["details"]
    assert details["train_images"] == 2 and not {"train_tasks", "holdout_tasks"} & details.keys()


# --- bad input: a clear HTTP error, never a crash ------------------------------------------------

def test_malformed_json(client):
    response = client.post("/predict", data="{not json", content_type="application/json")
    assert response.status_code == 400 and "JSON object" in response.get_json()["error"]


@pytest.mark.parametrize("task", ["task", {}, {"id": 1}, {"data": {"image": "a.png"}}, {"id": 1, "data": "a.png"}])
def test_tasks_that_are_not_label_studios_are_a_bad_request(client, task):
    """Label Studio sends every task with its id and data: a list of millions of empty objects
    would otherwise be answered one error each, an answer far larger than the request."""
    body = dict(recorded("predict_single")["body"], tasks=[recorded("predict_single")["body"]["tasks"][0], task])
    response = client.post("/predict", json=body)
    assert response.status_code == 400 and "task 1: not a JSON object with an 'id'" in response.get_json()["error"]


@pytest.mark.parametrize("project", ["-3", "0", "9" * 4000, "../1", "abc", "\u00b2", "\u0663"])
def test_project_ids_that_are_not_sane_positive_integers_are_refused(client, settings, project):
    body = copy.deepcopy(recorded("setup")["body"])
    body["project"] = project
    response = client.post("/setup", json=body)
    assert response.status_code == 400 and "invalid project" in response.get_json()["error"]
    assert not list(settings.model_dir.glob("project-*"))  # nothing created on disk


def test_deeply_nested_json_is_a_bad_request(client):
    body = "[" * 100_000 + "]" * 100_000
    response = client.post("/predict", data=body, content_type="application/json")
    assert response.status_code == 400


def test_no_tasks(client):
    body = dict(recorded("predict_single")["body"], tasks=[])
    response = client.post("/predict", json=body)
    assert response.status_code == 400 and "non-empty list" in response.get_json()["error"]


def test_task_without_the_image_field(client, settings, tiny_model, busbra_dir):
    install_model(settings, 2, tiny_model)
    body = copy.deepcopy(recorded("predict_single")["body"])
    body["tasks"][0]["data"] = {"text": "no image"}
    response = client.post("/predict", json=body)
    assert response.status_code == 400
    assert "task 1: no 'image' image field" in response.get_json()["error"]
    # in a batch it costs its own task only (imported under another key, say)
    body = copy.deepcopy(recorded("predict_batch")["body"])
    body["tasks"] = _local_tasks(busbra_dir, ["bus_0090-r.png", "bus_0084-r.png"])
    body["tasks"][1]["data"] = {"picture": body["tasks"][1]["data"]["image"]}
    first, second = client.post("/predict", json=body).get_json()["results"]
    assert "result" in first and "result" not in second
    assert second["error"] == f"task {body['tasks'][1]['id']}: no 'image' image field in its data"


def test_label_config_without_rectangle_labels(client, settings):
    body = dict(recorded("setup")["body"], schema='<View><Image name="image" value="$image"/>'
                '<Choices name="c" toName="image"><Choice value="BI-RADS 2"/></Choices></View>')
    response = client.post("/setup", json=body)
    assert response.status_code == 400
    assert "no RectangleLabels bound to an Image" in response.get_json()["error"]
    assert not (settings.model_dir / "project-1" / "label_config.xml").exists()  # not remembered


@pytest.mark.parametrize("schema", [["<View/>"], {"xml": "<View/>"}, 5])
def test_a_label_config_that_is_not_a_string_is_a_bad_request(client, settings, schema):
    response = client.post("/setup", json=dict(recorded("setup")["body"], schema=schema))
    assert response.status_code == 400 and "must be the XML as a string" in response.get_json()["error"]
    assert not (settings.model_dir / "project-1" / "label_config.xml").exists()


def test_unknown_or_impossible_job_ids_are_404(client, redis_conn):
    for job_id in ("0123abcd", "a.b", "a:b"):
        response = client.get(f"/jobs/{job_id}")
        assert response.status_code == 404 and "no job" in response.get_json()["error"]


def test_unreadable_and_refused_images(client, settings, tiny_model, busbra_dir):
    install_model(settings, 2, tiny_model)
    body = copy.deepcopy(recorded("predict_single")["body"])
    cases = {
        str(busbra_dir / "LICENSE.txt"): (422, "not an image"),
        str(busbra_dir / "Images" / "missing.png"): (422, "no such file"),
        "/etc/passwd": (403, "outside LOCAL_FILES_ROOT"),
        "http://example.org/scan.png": (502, "image host is not allowed or not reachable"),
    }
    for reference, (status, fragment) in cases.items():
        body["tasks"][0]["data"]["image"] = reference
        response = client.post("/predict", json=body)
        assert response.status_code == status, (reference, response.get_json())
        assert fragment in response.get_json()["error"] and "task 1" in response.get_json()["error"]


def test_a_batch_with_one_unreadable_image_answers_the_others(client, settings, tiny_model, busbra_dir):
    """The failed task's entry has no "result", so Label Studio stores nothing for it (and asks
    again later) while it stores every other task's prediction."""
    install_model(settings, 2, tiny_model)
    body = copy.deepcopy(recorded("predict_batch")["body"])
    body["tasks"] = _local_tasks(busbra_dir, ["bus_0090-r.png", "missing.png", "bus_0084-r.png"])
    response = client.post("/predict", json=body)
    assert response.status_code == 200, response.get_json()
    first, gone, last = response.get_json()["results"]
    assert "result" in first and "result" in last and "result" not in gone
    assert "no such file" in gone["error"] and gone["error"].startswith(f"task {body['tasks'][1]['id']}: ")
    assert first["model_version"] == gone["model_version"] == last["model_version"] == "v-test"


def test_tasks_not_reached_within_the_time_budget_are_left_for_label_studio_to_ask_again(
        settings, tiny_model, busbra_dir):
    """Label Studio gives up on a /predict after 100 s and then stores nothing: the backend answers
    in time with what it reached; the rest carry no "result", so Label Studio asks for them again."""
    install_model(settings, 2, tiny_model)
    hurried = create_app(replace(settings, predict_batch=1, predict_time_budget=1e-9)).test_client()
    body = copy.deepcopy(recorded("predict_batch")["body"])
    body["tasks"] = _local_tasks(busbra_dir, ["bus_0090-r.png", "bus_0084-r.png", "bus_0859-l.png"])
    reached, *left = hurried.post("/predict", json=body).get_json()["results"]
    assert "result" in reached  # the first batch always runs: each press stores something
    assert [r.get("result") for r in left] == [None, None]
    assert [r["error"] for r in left] == [f"task {t['id']}: not reached within PREDICT_TIME_BUDGET=1e-09 s"
                                          for t in body["tasks"][1:]]
    unhurried = create_app(replace(settings, predict_time_budget=0)).test_client()
    assert all("result" in r for r in unhurried.post("/predict", json=body).get_json()["results"])


def test_tasks_whose_image_failed_lately_are_read_after_the_others(settings, tiny_model, busbra_dir):
    """Label Studio sends a failed task first again (it stored nothing for it): read first each time,
    images that keep failing slowly would spend every request's budget before the rest are reached.
    Answers stay in the order Label Studio sent the tasks."""
    install_model(settings, 2, tiny_model)
    hurried = create_app(replace(settings, predict_batch=1, predict_time_budget=1e-9)).test_client()
    body = copy.deepcopy(recorded("predict_batch")["body"])
    body["tasks"] = _local_tasks(busbra_dir, ["missing.png", "bus_0084-r.png"])
    failed, waiting = hurried.post("/predict", json=body).get_json()["results"]
    assert "no such file" in failed["error"] and "not reached" in waiting["error"]  # the first batch: the bad one
    failed, answered = hurried.post("/predict", json=body).get_json()["results"]
    assert "not reached" in failed["error"] and "result" in answered  # now the good one goes first
    failed, answered = hurried.post("/predict", json=body).get_json()["results"]
    assert "not reached" in failed["error"] and "result" in answered


def test_a_batch_that_would_end_past_the_time_budget_is_not_started(settings, tiny_model, busbra_dir,
                                                                   monkeypatch):
    """A faked clock: each batch's downloads take 30 s, its inference 10 s. The request's body
    arrived at 0; the third batch (at 80 s) would end at 120 s, past the 90 s budget (Label Studio
    would then store nothing at all). The downloads of each batch may take only what the budget
    leaves once an inference as long as the last is set aside: one slow image cannot overrun it."""
    from backend import detector, limits

    install_model(settings, 2, tiny_model)
    app = create_app(replace(settings, predict_batch=1, predict_time_budget=90))
    client = app.test_client()
    client.post("/predict", json=recorded("predict_single")["body"])  # loaded before the clock is faked
    now, allowed = [0.0], []
    clock = SimpleNamespace(monotonic=lambda: now[0], perf_counter=time.perf_counter, sleep=time.sleep)
    monkeypatch.setattr(detector, "time", clock)
    monkeypatch.setattr(limits, "time", clock)  # the body's arrival: the budget's start
    fetcher = app.config["backend"].services.fetcher
    fetch_all, answers = fetcher.fetch_all, detector.BiradsDetector._answers

    def slow_fetch(references, workers=8, deadline=None):
        allowed.append(deadline - now[0])
        now[0] += 30
        return fetch_all(references, workers, deadline)

    def slow_inference(*args, **kwargs):
        now[0] += 10
        return answers(*args, **kwargs)

    monkeypatch.setattr(fetcher, "fetch_all", slow_fetch)
    monkeypatch.setattr(detector.BiradsDetector, "_answers", slow_inference)
    body = copy.deepcopy(recorded("predict_batch")["body"])
    body["tasks"] = _local_tasks(busbra_dir, ["bus_0090-r.png", "bus_0084-r.png", "bus_0859-l.png"])
    *reached, left = client.post("/predict", json=body).get_json()["results"]
    assert all("result" in r for r in reached) and "result" not in left
    assert "PREDICT_TIME_BUDGET=90 s" in left["error"]
    assert allowed == [90, 90 - 40 - 10]  # the second batch's downloads: 40 s, not FETCH_TIMEOUT's own


def test_redis_down_predict_works_training_answers_503(settings, tiny_model, busbra_dir):
    down = create_app(replace(settings, redis_url="redis://127.0.0.1:1/0")).test_client()
    connect(down)
    health = down.get("/health").get_json()
    assert health["status"] == "DEGRADED" and "unreachable" in health["degraded"]["queue"]
    response = down.post("/webhook", json=recorded("webhook_START_TRAINING")["body"])
    assert response.status_code == 503 and "training queue unavailable" in response.get_json()["error"]
    body = copy.deepcopy(recorded("predict_single")["body"])
    body["tasks"] = _local_tasks(busbra_dir, ["bus_0090-r.png"])
    assert down.post("/predict", json=body).status_code == 200


def test_basic_auth_guards_label_studio_calls_but_not_annotation_webhooks(settings):
    guarded = create_app(replace(settings, basic_auth_user="ls", basic_auth_pass="secret")).test_client()
    good = {"Authorization": "Basic " + base64.b64encode(b"ls:secret").decode()}
    bad = {"Authorization": "Basic " + base64.b64encode(b"ls:wrong").decode()}
    assert replay(guarded, "health").status_code == 401
    assert replay(guarded, "health", headers=good).status_code == 200
    connect(guarded, headers=good)
    assert replay(guarded, "setup").status_code == 401
    assert replay(guarded, "setup", headers=bad).status_code == 401
    assert replay(guarded, "setup", headers=good).status_code == 200
    assert replay(guarded, "predict_single", headers=good).status_code == 200
    assert replay(guarded, "webhook_START_TRAINING").status_code == 401
    assert replay(guarded, "webhook_ANNOTATION_CREATED").status_code == 200  # LS sends no auth here


def test_an_address_guessing_credentials_is_refused_and_no_other_address(settings):
    app = create_app(replace(settings, basic_auth_user="ls", basic_auth_pass="secret", webhook_secret="s3",
                             auth_max_failures=3))
    served = app.wsgi_app

    def from_address(environ, start_response):  # REMOTE_ADDR does not reach the app through this test client
        environ["REMOTE_ADDR"] = environ.pop("HTTP_X_TEST_ADDRESS", "127.0.0.1")
        return served(environ, start_response)

    app.wsgi_app = from_address
    guarded = app.test_client()
    good = {"Authorization": "Basic " + base64.b64encode(b"ls:secret").decode()}

    def guess(number: int) -> dict:
        return {"Authorization": "Basic " + base64.b64encode(f"ls:guess{number}".encode()).decode()}

    guesser, label_studio = {"X-Test-Address": "10.0.0.66"}, {"X-Test-Address": "10.0.0.5"}
    connect(guarded, headers=good | label_studio)
    for _ in range(5):  # no credentials guess nothing: not counted
        assert guarded.get("/health", headers=guesser).status_code == 401
    for _ in range(5):  # one stale password sent again and again (a project not updated) counts once
        assert guarded.get("/health", headers=guess(0) | guesser).status_code == 401
    assert guarded.get("/health", headers=good | guesser).status_code == 200
    for number in (1, 2):  # the third different wrong one
        assert guarded.get("/health", headers=guess(number) | guesser).status_code == 401
    for headers in (guess(3), good):  # locked out: even the right password is not tried
        refused = guarded.get("/health", headers=headers | guesser)
        assert refused.status_code == 429 and 290 <= int(refused.headers["Retry-After"]) <= 300
        assert "try again in" in refused.get_json()["error"]
    assert replay(guarded, "webhook_START_TRAINING", headers=good | guesser).status_code == 429
    assert replay(guarded, "health", headers=good | label_studio).status_code == 200
    # A wrong webhook secret counts apart: it locks out webhooks from that address, nothing else.
    for secret, expected in (("s2", 401), ("s2", 401), ("s4", 401), ("s5", 401), ("s6", 429)):
        wrong_secret = {"X-Webhook-Secret": secret} | label_studio
        assert replay(guarded, "webhook_ANNOTATION_CREATED", headers=wrong_secret).status_code == expected
    assert replay(guarded, "predict_single", headers=good | label_studio).status_code == 200


# --- webhooks are triggers only ------------------------------------------------------------------

def test_a_webhook_for_a_project_never_set_up_creates_nothing(client, settings, redis_conn):
    for name in ("webhook_ANNOTATION_CREATED", "webhook_START_TRAINING"):
        response = replay(client, name)
        assert response.status_code == 404 and "not connected" in response.get_json()["error"]
    assert not settings.model_dir.exists() or not list(settings.model_dir.iterdir())
    assert len(Queue(settings.queue_name, connection=redis_conn)) == 0
    assert not redis_conn.keys(f"birads:{settings.queue_name}:*")


def test_a_webhook_cannot_change_the_label_config(client, settings):
    connect(client)
    remembered = settings.model_dir / "project-2" / "label_config.xml"
    before = remembered.read_text()
    body = copy.deepcopy(recorded("webhook_ANNOTATION_CREATED")["body"])
    body["project"]["label_config"] = CONFIG.replace("BI-RADS 3", "BI-RADS 5")
    assert client.post("/webhook", json=body).status_code in (200, 201)
    assert remembered.read_text() == before


def test_webhook_secret(settings):
    client = create_app(replace(settings, webhook_secret="s3cret")).test_client()
    connect(client)
    for headers in (None, {"X-Webhook-Secret": "wrong"}, {"X-Webhook-Secret": ""}):
        assert replay(client, "webhook_ANNOTATION_CREATED", headers=headers).status_code == 401
    answer = replay(client, "webhook_ANNOTATION_CREATED", headers={"X-Webhook-Secret": "s3cret"})
    assert answer.status_code == 200 and answer.get_json()["status"] == "waiting"


def test_a_webhook_without_credentials_is_refused_before_its_body_is_parsed(settings):
    """An outsider's 20 MB of JSON would hold a worker for a second: with WEBHOOK_SECRET and basic
    auth set, a webhook carrying neither is refused from its headers (a body that is no JSON at all
    answers 401, not 400); each kind of sender still gets in with its own credential."""
    client = create_app(replace(settings, webhook_secret="s3cret", basic_auth_user="ls",
                                basic_auth_pass="pw")).test_client()
    good, wrong = ({"Authorization": "Basic " + base64.b64encode(pair).decode()} for pair in (b"ls:pw", b"ls:no"))
    connect(client, headers=good)
    for headers in (None, {"X-Webhook-Secret": "wrong"}, wrong):
        refused = client.post("/webhook", data="[" * 1000, content_type="application/json", headers=headers)
        assert refused.status_code == 401 and refused.get_json() == {"error": "authentication required"}
    assert client.post("/webhook", data="[", content_type="application/json",
                       headers={"X-Webhook-Secret": "s3cret"}).status_code == 400  # in: then its body is read
    assert replay(client, "webhook_ANNOTATION_CREATED", headers={"X-Webhook-Secret": "s3cret"}).status_code == 200
    assert replay(client, "webhook_START_TRAINING", headers=good).status_code == 201
    assert replay(client, "webhook_START_TRAINING", headers={"X-Webhook-Secret": "s3cret"}).status_code == 401
    # beside a (constant, wrong) secret a password is not looked at: a right guess passes no better
    for password in ("guess", "pw"):
        guess = {"Authorization": "Basic " + base64.b64encode(f"ls:{password}".encode()).decode(),
                 "X-Webhook-Secret": "x"}
        assert client.post("/webhook", json={"action": "PROJECT_UPDATED"}, headers=guess).status_code == 401
    # alone, a password is checked and counted as anywhere: locked out, the right one gets 429 too
    for number in range(9):  # and "ls:no" above: AUTH_MAX_FAILURES (10) different wrong ones
        guess = {"Authorization": "Basic " + base64.b64encode(f"ls:guess{number}".encode()).decode()}
        assert client.post("/webhook", json={"action": "PROJECT_UPDATED"}, headers=guess).status_code == 401
    assert replay(client, "webhook_START_TRAINING", headers=good).status_code == 429
    assert client.get("/health", headers=good).status_code == 429
    # a locked-out secret guesser's right secret: 429 before any body is read
    for number in range(10):
        client.post("/webhook", json={"action": "PROJECT_UPDATED"}, headers={"X-Webhook-Secret": f"s{number}"})
    assert replay(client, "webhook_ANNOTATION_CREATED", headers={"X-Webhook-Secret": "s3cret"}).status_code == 429


# --- request size -----------------------------------------------------------------------------------

def test_too_large_a_body_is_413(settings):
    client = create_app(replace(settings, max_request_bytes=50_000)).test_client()
    response = client.post("/predict", data="x" * 60_000, content_type="application/json")
    assert response.status_code == 413 and "MAX_REQUEST_BYTES" in response.get_json()["error"]


def test_tasks_beyond_max_tasks_are_left_for_label_studio_to_ask_again(settings, tiny_model, busbra_dir):
    """"Retrieve predictions" sends every selected task in one request: a 413 would store nothing,
    and the next press would send the same tasks again. The first MAX_TASKS are answered."""
    install_model(settings, 2, tiny_model)
    client = create_app(replace(settings, max_tasks=2)).test_client()
    body = copy.deepcopy(recorded("predict_batch")["body"])
    body["tasks"] = _local_tasks(busbra_dir, ["bus_0090-r.png", "bus_0084-r.png", "bus_0859-l.png"])
    response = client.post("/predict", json=body)
    assert response.status_code == 200
    *answered, left = response.get_json()["results"]
    assert all("result" in r for r in answered) and "result" not in left
    assert left["error"] == f"task {body['tasks'][2]['id']}: beyond MAX_TASKS=2 in one request"


# --- what is served is checked ----------------------------------------------------------------------

def test_a_corrupt_current_version_falls_back_to_the_last_good_one(client, settings, tiny_model, busbra_dir):
    install_model(settings, 2, tiny_model, "v1")
    install_model(settings, 2, tiny_model, "v2")
    registry = Registry(settings.model_dir / "project-2")
    with open(registry.path("v2") / "model_final.pth", "r+b") as weights:  # one flipped byte on disk
        weights.seek(1000)
        byte = weights.read(1)
        weights.seek(1000)
        weights.write(bytes([byte[0] ^ 0xFF]))
    connect(client)
    assert client.post("/setup", json=dict(recorded("setup")["body"], project="2.1")).get_json() == \
        {"model_version": "v1"}
    body = copy.deepcopy(recorded("predict_single")["body"])
    body["tasks"] = _local_tasks(busbra_dir, ["bus_0090-r.png"])
    assert client.post("/predict", json=body).get_json()["model_version"] == "v1"
    health = client.get("/health").get_json()
    assert "model_final.pth changed since it was sealed" in health["degraded"]["project 2"]
    assert "serving v1" in health["degraded"]["project 2"]


def test_a_dangling_current_is_an_error_not_untrained(client, settings, tiny_model, busbra_dir):
    install_model(settings, 2, tiny_model, "v1")
    registry = Registry(settings.model_dir / "project-2")
    shutil.rmtree(registry.path("v1"))
    body = copy.deepcopy(recorded("predict_single")["body"])
    body["tasks"] = _local_tasks(busbra_dir, ["bus_0090-r.png"])
    response = client.post("/predict", json=body)
    assert response.status_code == 503 and "version v1 does not exist" in response.get_json()["error"]
    setup = client.post("/setup", json=dict(recorded("setup")["body"], project="2.1"))
    assert setup.status_code == 503
    assert "does not exist" in client.get("/health").get_json()["degraded"]["project 2"]
    jobs = client.get("/jobs", query_string={"project": 2})  # the jobs stay visible
    assert jobs.status_code == 200, jobs.get_json()
    assert jobs.get_json()["current_version"] is None and "does not exist" in jobs.get_json()["problem"]


def test_a_refused_version_is_listed_with_its_reason(client, settings, tiny_model):
    install_model(settings, 2, tiny_model, "v1")
    registry = Registry(settings.model_dir / "project-2")
    shutil.copytree(tiny_model, registry.path("v2"))
    registry.describe("v2", parent="v1", refused="ap50_lesion 0.100 on 5 held-out tasks is below ...")
    answer = replay(client, "versions").get_json()
    details = {d["version"]: d for d in answer["details"]}
    assert details["v2"]["refused"].startswith("ap50_lesion") and details["v2"]["current"] is False
    assert details["v1"]["current"] is True


def test_versions_of_one_project_on_request(client, settings, tiny_model):
    """Label Studio asks for every project's versions (its GET names none); `?project=ID` narrows
    the list to one, and a project without versions lists none."""
    install_model(settings, 2, tiny_model, "v1")
    install_model(settings, 5, tiny_model, "v7")
    every = client.get("/versions").get_json()
    assert sorted(every["versions"]) == ["v1", "v7"]
    answer = client.get("/versions", query_string={"project": 5}).get_json()
    assert answer["versions"] == ["v7"] and answer["details"][0]["project"] == 5
    assert client.get("/versions", query_string={"project": 9}).get_json() == {"versions": [], "details": []}
    bad = client.get("/versions", query_string={"project": "../2"})
    assert bad.status_code == 400 and "invalid project" in bad.get_json()["error"]


def test_a_path_cannot_forge_a_log_line(settings, caplog):
    client = create_app(replace(settings, basic_auth_user="ls", basic_auth_pass="pw")).test_client()
    forged = "x%0A2026-07-01 09:00:00,000 INFO backend: project 1: serving v7%1B[2J"
    assert client.get(f"/jobs/{forged}").status_code == 401
    refusal = next(r.getMessage() for r in caplog.records if "-> 401" in r.getMessage())
    assert "\n" not in refusal and "\x1b" not in refusal and "\\n2026-07-01" in refusal
    open_client = create_app(settings).test_client()  # and in an error's own text (a job id)
    assert open_client.get(f"/jobs/{forged}").status_code == 404
    missing = next(r.getMessage() for r in caplog.records if "-> 404" in r.getMessage())
    assert "\n" not in missing and "\x1b" not in missing and "no job x\\n2026-07-01" in missing
