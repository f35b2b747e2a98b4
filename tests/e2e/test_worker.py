"""Training jobs on a real RQ worker with a real Redis (tests/conftest.py), reading a real Label
Studio project: coalescing while queued, a new job for events during training, versions that
chain, and a worker killed mid-training that changes nothing served."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.registry import StartedJobRegistry

from backend.jobs import LOCK_TTL_S, TrainingQueue, job_status
from backend.services import Services, starter_version
from backend.settings import Settings
from model.registry import Registry
from tests.backend.conftest import install_model
from tests.conftest import redis_database
from tests.e2e.conftest import REPO, annotate, create_project

pytestmark = pytest.mark.slow


@pytest.fixture()
def worker_settings(tmp_path, label_studio, redis_server) -> Settings:
    return Settings(model_dir=tmp_path / "models", redis_url=redis_database(redis_server, 14),
                    queue_name=f"e2e-{uuid.uuid4().hex[:8]}",
                    label_studio_url=label_studio["url"], label_studio_api_key=label_studio["token"],
                    train_base_config="COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml", train_image_size=160,
                    train_max_iter=6, holdout_fraction=0.0, bf16="false")


def start_worker(settings: Settings, log, **more: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), REDIS_URL=settings.redis_url, RQ_QUEUE=settings.queue_name,
               MODEL_DIR=str(settings.model_dir), LABEL_STUDIO_URL=settings.label_studio_url,
               LABEL_STUDIO_API_KEY=settings.label_studio_api_key, TRAIN_BASE_CONFIG=settings.train_base_config,
               TRAIN_IMAGE_SIZE=str(settings.train_image_size), TRAIN_MAX_ITER=str(settings.train_max_iter),
               **{"HOLDOUT_FRACTION": "0", "BF16": "false", **more})
    return subprocess.Popen([sys.executable, "-m", "backend.worker"], env=env, cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def run_on_worker(settings: Settings, redis: Redis, job_id: str, tmp_path: Path, seconds: float,
                  **more: str) -> dict:
    """Start a worker, wait up to ``seconds`` for the job to end, stop the worker: the job's status
    (the worker's log in tmp_path/worker.log)."""
    with open(tmp_path / "worker.log", "w") as log:
        worker = start_worker(settings, log, **more)
        try:
            return wait(lambda: (s := job_status(redis, job_id))["status"] in ("finished", "failed") and s,
                        seconds, "job did not end")
        finally:
            worker.terminate()
            worker.wait(timeout=30)


def kill_tree(pid: int) -> list[int]:
    """SIGKILL a process and all its descendants (RQ's work horse runs in its own process group)."""
    os.kill(pid, signal.SIGSTOP)  # no new children while we walk the tree
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    killed = [pid]
    for child in children:
        killed += kill_tree(int(child))
    os.kill(pid, signal.SIGKILL)
    return killed


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # zombies are dead
    except FileNotFoundError:
        return False


def wait(condition, seconds: float, what: str):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(1)
    raise TimeoutError(what)


@pytest.fixture()
def annotated_project(label_studio, busbra_dir):
    client, project, tasks = create_project(label_studio, busbra_dir / "Images", f"worker {uuid.uuid4().hex[:6]}")
    annotate(client, project, tasks, busbra_dir / "Images")
    return project


def _annotations_made(label_studio: dict, project: int) -> dict[str, list[int]]:
    """Each task's annotation ids, as Label Studio lists them (one expert's each here)."""
    from label_studio_sdk import LabelStudio

    client = LabelStudio(base_url=label_studio["url"], api_key=label_studio["token"])
    made = {str(t.id): [a["id"] for a in t.annotations] for t in client.tasks.list(project=project, fields="all")}
    assert len(made) == 4 and all(len(ids) == 1 for ids in made.values())
    return made


def test_jobs_coalesce_while_queued_and_chain_versions(worker_settings, annotated_project, tmp_path, label_studio):
    redis = Redis.from_url(worker_settings.redis_url)
    training = TrainingQueue(redis, worker_settings)
    answers = [training.request(annotated_project, "START_TRAINING", force=True) for _ in range(5)]
    assert [a["status"] for a in answers] == ["queued"] + ["coalesced"] * 4
    first = answers[0]["job_id"]
    with open(tmp_path / "worker.log", "w") as log:
        worker = start_worker(worker_settings, log)
        try:
            # taken up by the worker: it reads Label Studio, probes its speed and trains from here on,
            # seconds in which the next request arrives (and is checked below to have arrived then)
            wait(lambda: Job.fetch(first, connection=redis).get_status() == "started", 240,
                 "first job did not start")
            during = training.request(annotated_project, "START_TRAINING", force=True)
            assert during["status"] == "queued" and during["job_id"] != first  # not folded into a running job
            assert job_status(redis, first)["status"] not in ("finished", "failed")  # it was running then
            done = wait(lambda: all(job_status(redis, j)["status"] in ("finished", "failed") for j in
                                    (first, during["job_id"])), 480, "jobs did not finish")
            assert done
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    one, two = job_status(redis, first), job_status(redis, during["job_id"])
    assert one["status"] == "finished", (tmp_path / "worker.log").read_text()[-3000:]
    assert two["status"] == "finished", (tmp_path / "worker.log").read_text()[-3000:]
    assert one["progress"]["events"] == 5
    registry = Registry(worker_settings.model_dir / f"project-{annotated_project}")
    assert registry.current() == two["result"]["version"]
    assert registry.info(two["result"]["version"])["parent"] == one["result"]["version"]  # fine-tuned from v1
    assert one["result"]["train_images"] == 4 and one["result"]["for_review"] == []
    timing = one["result"]["timing"]  # estimated before training from probe iterations, then measured
    assert timing["max_iter"] == 6 and timing["seconds_per_iter_probe"] > 0
    # v1 trained from nothing on the full schedule's rate, v2 fine-tuned v1 on the gentle one
    assert (timing["schedule"], timing["base_lr"]) == ("first training", 0.02)
    assert (two["result"]["timing"]["schedule"], two["result"]["timing"]["base_lr"]) == (
        "fine-tune", worker_settings.fine_tune_lr)
    assert timing["estimated_seconds"] >= 0 and timing["training_seconds"] > 0
    assert registry.info(one["result"]["version"])["timing"] == timing
    # each version records the experts' annotations it learnt from, by their ids in Label Studio
    made = _annotations_made(label_studio, annotated_project)
    for job in (one, two):
        info = registry.info(job["result"]["version"])
        assert (info["train_tasks"], info["holdout_tasks"]) == (made, {})  # HOLDOUT_FRACTION=0
    assert "annotations_of" not in one["result"]  # the record is the version's, not the job's


def test_a_projects_first_training_fine_tunes_the_starter_model(worker_settings, annotated_project,
                                                               classified_tiny_model, tmp_path, busbra_dir):
    """INITIAL_WEIGHTS naming a model directory (the reference model a project manager built): the
    project's first version is trained from its weights, box classifier included, and names it as
    its parent; REPLAY_DATA's images (the starter's own data) are trained on beside the project's."""
    import torch

    from model import box_classifier
    from model.modeldir import WEIGHTS, read_info

    def stem(model_dir: Path) -> torch.Tensor:
        state = torch.load(model_dir / WEIGHTS, map_location="cpu", weights_only=True)["model"]
        return state["backbone.bottom_up.stem.conv1.weight"].flatten().float()

    # A starter whose first layer no training from random weights would reach: the sample model's,
    # negated (a run from scratch starts from the sample model's own random weights, seed 42).
    starter = tmp_path / "reference"
    shutil.copytree(classified_tiny_model, starter)
    checkpoint = torch.load(starter / WEIGHTS, map_location="cpu", weights_only=True)
    checkpoint["model"]["backbone.bottom_up.stem.conv1.weight"] *= -1
    torch.save(checkpoint, starter / WEIGHTS)
    redis = Redis.from_url(worker_settings.redis_url)
    job_id = TrainingQueue(redis, worker_settings).request(annotated_project, "START_TRAINING", force=True)["job_id"]
    with open(tmp_path / "worker.log", "w") as log:
        worker = start_worker(worker_settings, log, INITIAL_WEIGHTS=str(starter), REPLAY_DATA=f"busbra:{busbra_dir}",
                              REPLAY_SPLITS="fold1,fold2", REPLAY_RATIO="0.25")
        try:
            wait(lambda: job_status(redis, job_id)["status"] in ("finished", "failed"), 480, "job did not finish")
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    status = job_status(redis, job_id)
    assert status["status"] == "finished", (tmp_path / "worker.log").read_text()[-3000:]
    version = status["result"]["version"]
    assert status["result"]["parent"] == starter_version(starter)
    registry = Registry(worker_settings.model_dir / f"project-{annotated_project}")
    assert registry.current() == version and registry.info(version)["parent"] == status["result"]["parent"]
    trained = registry.path(version)
    assert read_info(trained).parent == str(starter)
    assert status["result"]["timing"]["schedule"] == "fine-tune"
    assert read_info(trained).settings["base_lr"] == worker_settings.fine_tune_lr
    # six iterations move the starter's weights a little (cosine ~0.98 seen); from random weights
    # they would point the other way (cosine near -1)
    assert torch.cosine_similarity(stem(trained), stem(starter), dim=0) > 0.9
    assert box_classifier.has_classifier(trained)  # the starter's classifier fine-tuned with it
    # a quarter of an image replayed per project image, from the two folds asked for
    tasks = status["result"]["train_images"]
    assert status["result"]["replay_images"] == round(0.25 * tasks) > 0
    assert registry.info(version)["replay_images"] == status["result"]["replay_images"]
    data = read_info(trained).data
    assert data["images"] == tasks + status["result"]["replay_images"]
    assert data["splits"]["replay"] == status["result"]["replay_images"]


def test_worker_killed_mid_training_leaves_served_version(worker_settings, annotated_project, tiny_model, tmp_path):
    # long enough to be killed in the middle; two edits made before it, of the three that retrain
    settings = replace(worker_settings, train_max_iter=2000, retrain_after=3)
    install_model(settings, annotated_project, tiny_model, "v-served")
    redis = Redis.from_url(worker_settings.redis_url)
    queue = TrainingQueue(redis, settings)
    for _ in range(2):
        queue.request(annotated_project, "ANNOTATION_UPDATED", force=False)
    job_id = queue.request(annotated_project, "START_TRAINING", force=True)["job_id"]
    with open(tmp_path / "worker.log", "w") as log:
        worker = start_worker(settings, log)
        try:
            wait(lambda: Job.fetch(job_id, connection=redis).get_meta().get("stage") == "training", 240,
                 "job did not start training")
            time.sleep(5)
        finally:
            killed = kill_tree(worker.pid)  # the worker, its work horse and data loader, mid-training
            worker.wait(timeout=30)
    assert len(killed) >= 2  # the work horse was really among them
    wait(lambda: not any(_running(p) for p in killed), 30, "killed processes still running")
    registry = Registry(settings.model_dir / f"project-{annotated_project}")
    assert registry.current() == "v-served"
    assert registry.versions() == ["v-served"]  # no half-written version became visible
    # RQ's own maintenance finds abandoned jobs once their heartbeat expires; fast-forward its clock.
    StartedJobRegistry(queue=Queue(settings.queue_name, connection=redis)).cleanup(timestamp=time.time() + 3600)
    status = job_status(redis, job_id)
    assert status["status"] == "failed", status
    assert Registry(settings.model_dir / f"project-{annotated_project}").current() == "v-served"
    # its project lock, no longer renewed by its dead process, expires within LOCK_TTL_S: fast-forward
    lock = queue._key(annotated_project, "training")
    assert redis.get(lock) == job_id.encode() and 0 < redis.ttl(lock) <= LOCK_TTL_S
    redis.delete(lock)
    # the killed job's two edits count again: the next one makes three and queues training
    assert queue.request(annotated_project, "ANNOTATION_UPDATED", force=False)["status"] == "queued"


def test_a_job_for_a_project_label_studio_does_not_know_creates_nothing(worker_settings, monkeypatch):
    """The job asks Label Studio's API for the config: a project it does not know fails the job."""
    from backend import training
    from backend.labelstudio import UnknownProject

    _settings_env(monkeypatch, worker_settings)
    with pytest.raises(UnknownProject, match="no project 987654"):
        training.train_project(987654)
    assert not (worker_settings.model_dir / "project-987654").exists()


def test_a_version_worse_on_the_held_out_tasks_is_kept_but_not_served(worker_settings, annotated_project,
                                                                      tiny_model, tmp_path):
    """A real job on the real worker: trained, evaluated beside the served version on the same
    held-out task, and refused (a tolerance below zero demands a gain this short run cannot make)."""
    install_model(worker_settings, annotated_project, tiny_model, "v-served")
    fraction = _one_held_out(worker_settings, annotated_project)
    redis = Redis.from_url(worker_settings.redis_url)
    job_id = TrainingQueue(redis, worker_settings).request(annotated_project, "START_TRAINING", force=True)["job_id"]
    status = run_on_worker(worker_settings, redis, job_id, tmp_path, 480, HOLDOUT_FRACTION=str(fraction),
                           PROMOTE_TOLERANCE="-1")
    assert status["status"] == "finished", (tmp_path / "worker.log").read_text()[-3000:]
    result = status["result"]
    assert result["promoted"] is False and result["holdout_images"] == 1
    assert "below the served version's" in result["refused"]
    assert result["served_metrics"]["n_images"] == result["metrics"]["n_images"] == 1
    # both judged on what the annotator is shown (SHOW_BOXES, top1-only by default)
    assert result["metrics"]["display"] == result["served_metrics"]["display"] == worker_settings.show_boxes
    registry = Registry(worker_settings.model_dir / f"project-{annotated_project}")
    assert registry.current() == "v-served" and result["version"] in registry.versions()
    assert registry.info(result["version"])["refused"] == result["refused"]


def _one_held_out(settings: Settings, project: int) -> float:
    """A HOLDOUT_FRACTION that holds out exactly one of the project's tasks (model.promotion.held_out)."""
    import hashlib

    ids = [t["id"] for t in Services(settings).api.annotated_tasks(project)]
    shares = sorted(hashlib.sha1(str(i).encode()).digest()[0] / 256 for i in ids)
    return (shares[0] + shares[1]) / 2


def _settings_env(monkeypatch, settings: Settings, **more: str) -> None:
    """The environment a worker would have (train_project reads its settings from it)."""
    for key, value in {"REDIS_URL": settings.redis_url, "RQ_QUEUE": settings.queue_name,
                       "MODEL_DIR": str(settings.model_dir), "LABEL_STUDIO_URL": settings.label_studio_url,
                       "LABEL_STUDIO_API_KEY": settings.label_studio_api_key,
                       "TRAIN_BASE_CONFIG": settings.train_base_config,
                       "TRAIN_IMAGE_SIZE": str(settings.train_image_size),
                       "TRAIN_MAX_ITER": str(settings.train_max_iter), "BF16": "false", **more}.items():
        monkeypatch.setenv(key, value)


def test_a_version_whose_evaluation_fails_is_kept_described_and_not_served(worker_settings, annotated_project,
                                                                            monkeypatch, label_studio):
    """Training's hour is not thrown away when the held-out evaluation fails after it: the version
    stays, described with the reason, and is never served automatically; the job still fails."""
    from backend import training

    def unreadable(*args, **kwargs):
        raise OSError("held-out image unreadable")

    _settings_env(monkeypatch, worker_settings, HOLDOUT_FRACTION=str(_one_held_out(worker_settings, annotated_project)))
    monkeypatch.setattr(training, "holdout_metrics", unreadable)
    # label_studio_ml, imported by this session's app, sets "spawn" for the whole process; a worker
    # process never imports it and trains with Linux's "fork", as this in-process job must too
    started_as = multiprocessing.get_start_method()
    multiprocessing.set_start_method("fork", force=True)
    try:
        with pytest.raises(OSError, match="held-out image unreadable"):
            training.train_project(annotated_project)
    finally:
        multiprocessing.set_start_method(started_as, force=True)
    registry = Registry(worker_settings.model_dir / f"project-{annotated_project}")
    [version] = registry.versions()
    info = registry.info(version)
    assert info["refused"] == "not evaluated: held-out image unreadable" and info["holdout_images"] == 1
    # the held-out task is named apart from the three it trained on, each with its annotation
    made = _annotations_made(label_studio, annotated_project)
    assert len(info["holdout_tasks"]) == 1 and len(info["train_tasks"]) == 3
    assert {**info["train_tasks"], **info["holdout_tasks"]} == made
    assert registry.current() is None and (registry.path(version) / "model_final.pth").exists()


def test_a_version_served_by_hand_while_a_job_trains_stays_served(worker_settings, annotated_project,
                                                                  tiny_model, monkeypatch):
    """An administrator rolls back (`birads promote`) while a job fine-tunes from the version it
    replaces: the job's version is kept and described, the rollback stays served."""
    from backend import training

    install_model(worker_settings, annotated_project, tiny_model, version="v-good")
    install_model(worker_settings, annotated_project, tiny_model, version="v-bad")
    registry = Registry(worker_settings.model_dir / f"project-{annotated_project}")
    evaluate = training.held_out_metrics

    def rolled_back_meanwhile(*args, **kwargs):  # after training, before the job promotes
        registry.promote("v-good")
        return evaluate(*args, **kwargs)

    def unremovable(self, keep):  # old versions on a disk that refuses: the job's outcome stands
        raise PermissionError("read-only file system")

    _settings_env(monkeypatch, worker_settings, HOLDOUT_FRACTION="0")
    monkeypatch.setattr(training, "held_out_metrics", rolled_back_meanwhile)
    monkeypatch.setattr(Registry, "prune", unremovable)
    started_as = multiprocessing.get_start_method()  # see the test above
    multiprocessing.set_start_method("fork", force=True)
    try:
        result = training.train_project(annotated_project)
    finally:
        multiprocessing.set_start_method(started_as, force=True)
    assert result["parent"] == "v-bad" and result["promoted"] is False and result["removed_versions"] == []
    assert "changed from v-bad to v-good while this job trained" in result["refused"]
    assert registry.current() == "v-good" and registry.info(result["version"])["refused"] == result["refused"]


def test_a_job_refused_for_too_few_annotations_spends_its_changes(worker_settings, annotated_project, tmp_path):
    """MIN_ANNOTATIONS above what the project has: the job fails before downloading anything, and its
    changes are not given back, so the next annotations do not each queue a job that fails alike;
    the next RETRAIN_AFTER of them ask again."""
    settings = replace(worker_settings, retrain_after=2)
    redis = Redis.from_url(settings.redis_url)
    queue = TrainingQueue(redis, settings)
    assert queue.request(annotated_project, "ANNOTATION_CREATED", force=False)["status"] == "waiting"
    job_id = queue.request(annotated_project, "ANNOTATION_CREATED", force=False)["job_id"]
    status = run_on_worker(settings, redis, job_id, tmp_path, 120, MIN_ANNOTATIONS="1000")
    assert status["status"] == "failed" and "MIN_ANNOTATIONS is 1000" in status["error"], status
    assert not (settings.model_dir / f"project-{annotated_project}" / "images").exists()
    assert queue.request(annotated_project, "ANNOTATION_CREATED", force=False) == {
        "status": "waiting", "changes": 1, "retrain_after": 2}
