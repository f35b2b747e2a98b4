"""One training job per project at a time, however many workers listen (real Redis, no worker)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
from rq import Queue, Worker
from rq.job import JobStatus

from backend import training
from backend.jobs import ProjectBusy, TrainingQueue


def test_a_projects_second_training_waits_for_the_first_and_other_projects_do_not(settings, redis_conn):
    queue = TrainingQueue(redis_conn, replace(settings, job_timeout=2))
    waited, order = [], []

    def second() -> None:
        with queue.training(7, on_wait=lambda: waited.append(time.monotonic())):
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


def test_waiting_for_the_project_does_not_eat_into_a_jobs_run(settings, redis_conn):
    """RQ stops a job at its timeout, the wait included: a job may wait JOB_TIMEOUT and still run
    JOB_TIMEOUT."""
    queue = TrainingQueue(redis_conn, replace(settings, job_timeout=100))
    job = queue.queue.fetch_job(queue.request(7, "START_TRAINING", force=True)["job_id"])
    assert job.timeout == queue.rq_timeout == 200


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


def _started_on(job, worker) -> None:
    """The job as RQ leaves it running on ``worker`` (``worker`` None: one SIGKILLed since, whose
    key has expired)."""
    job.worker_name = worker.name if worker else "killed-worker"
    job.set_status(JobStatus.STARTED)
    job.save()


def test_the_changes_a_job_took_count_again_when_it_fails_or_is_killed(settings, redis_conn):
    """RETRAIN_AFTER 3: two edits, then a job takes them. Finished: they are spent. Failed, or
    killed outright (left "started" by a SIGKILLed worker, whose key then expires): the next edit
    finds them again and queues training."""
    queue = TrainingQueue(redis_conn, replace(settings, retrain_after=3))

    def job_taking_two_edits(project: int):
        for _ in range(2):
            assert queue.request(project, "ANNOTATION_CREATED", force=False)["status"] == "waiting"
        job = queue.queue.enqueue("backend.training.train_project", project)
        assert queue.started(project, job.id) == 2
        return job

    finished = job_taking_two_edits(7)
    queue.ended(7, finished.id, give_back=False)
    assert queue.request(7, "ANNOTATION_CREATED", force=False) == {"status": "waiting", "changes": 1,
                                                                   "retrain_after": 3}
    failed = job_taking_two_edits(8)
    queue.ended(8, failed.id, give_back=True)
    assert queue.request(8, "ANNOTATION_CREATED", force=False)["status"] == "queued"

    killed = job_taking_two_edits(9)
    worker = Worker([queue.queue], connection=redis_conn)
    worker.register_birth()
    _started_on(killed, worker)
    assert queue.request(9, "ANNOTATION_CREATED", force=False)["status"] == "waiting"  # still running
    worker.register_death()
    redis_conn.delete(worker.key)  # what Redis does once a SIGKILLed worker stops renewing it
    redis_conn.set(queue._key(9, "training"), killed.id)  # its training process outlived the worker
    assert queue.request(9, "ANNOTATION_CREATED", force=False)["status"] == "waiting"
    redis_conn.delete(queue._key(9, "training"))          # and then died too: its lock expired
    assert queue.request(9, "ANNOTATION_CREATED", force=False)["status"] == "queued"   # 2 + 3 edits
    queue.ended(9, killed.id, give_back=True)  # a job that comes back to life gives nothing twice
    assert int(redis_conn.get(queue._key(9, "changes"))) == 5


def test_the_project_lock_lives_while_its_holder_renews_it(settings, redis_conn, monkeypatch):
    """The lock expires LOCK_TTL_S after its holder's process stops renewing it (killed in any
    way, its worker's parent too): never while the job runs, never hours after it died."""
    from backend import jobs

    monkeypatch.setattr(jobs, "LOCK_TTL_S", 2)
    monkeypatch.setattr(jobs, "RENEW_EVERY_S", 0.3)
    queue = TrainingQueue(redis_conn, replace(settings, job_timeout=4))
    with queue.training(7, "the-running-job"):
        with pytest.raises(ProjectBusy):  # waited for 4 s, twice the lock's TTL: renewed all along
            with queue.training(7, "the-next-job"):
                pass
    assert redis_conn.get(queue._key(7, "training")) is None  # released at its end
    monkeypatch.setattr(jobs, "_renew", lambda *args: None)  # a holder whose process died
    queue.training(7, "the-killed-job").__enter__()          # and so never releases it either
    started = time.monotonic()
    monkeypatch.undo()
    with TrainingQueue(redis_conn, replace(settings, job_timeout=10)).training(7, "the-next-job"):
        assert redis_conn.get(queue._key(7, "training")) == b"the-next-job"
    assert time.monotonic() - started < 4


def test_an_event_whose_count_a_starting_job_took_queues_no_second_job(settings, redis_conn):
    """RETRAIN_AFTER 2: the second edit reaches it, but before it looks for a queued job, the queued
    one starts and takes the count (and will read that edit's annotation): no second job."""
    queue = TrainingQueue(redis_conn, replace(settings, retrain_after=2))
    job_id = queue.request(7, "START_TRAINING", force=True)["job_id"]
    assert queue.request(7, "ANNOTATION_CREATED", force=False)["status"] == "waiting"

    class StartingBetween:  # the real Redis, with the job starting right after the count is read
        def __getattr__(self, name):
            return getattr(redis_conn, name)

        def incrby(self, key, amount):
            counted = redis_conn.incrby(key, amount)
            queue.redis = redis_conn
            assert queue.started(7, job_id) == 2
            return counted

    queue.redis = StartingBetween()
    answer = queue.request(7, "ANNOTATION_CREATED", force=False)
    assert answer == {"status": "taken", "changes": 0, "retrain_after": 2}
    assert queue._queued_job(7) is None and queue.recent_jobs(7) == [job_id]


def test_a_job_whose_lock_expired_takes_it_back_or_stops_where_another_job_has_it(settings, redis_conn, monkeypatch):
    """Redis away for longer than LOCK_TTL_S: the lock expires. At its next progress report the job
    takes it back where no other job did; where the next job has taken the project, it stops instead
    of training on beside it."""
    from backend import jobs

    monkeypatch.setattr(jobs, "LOCK_TTL_S", 1)
    monkeypatch.setattr(jobs, "RENEW_EVERY_S", 0.2)
    queue = TrainingQueue(redis_conn, replace(settings, job_timeout=10))
    key = queue._key(7, "training")
    with queue.training(7, "the-first-job") as holding:
        holding.check()  # held: nothing to say
        redis_conn.delete(key)  # expired during an outage, and no one took it
        assert holding.lost.wait(5)
        holding.check()
        assert redis_conn.get(key) == b"the-first-job" and not holding.lost.is_set()
        time.sleep(1.5)  # renewed again since, past the lock's TTL
        assert redis_conn.get(key) == b"the-first-job"
        redis_conn.delete(key)  # expired again, and this time taken by the next job
        with queue.training(7, "the-second-job"):
            assert holding.lost.wait(5)
            with pytest.raises(jobs.ProjectLost, match="job the-second-job holds it now"):
                holding.check()
            assert redis_conn.get(key) == b"the-second-job"


def test_a_request_stopped_before_its_job_was_queued_leaves_no_phantom(settings, redis_conn, monkeypatch):
    """The bookkeeping is written first, in one transaction; stopped before RQ has the job (Redis
    gone for a moment), the next request queues a job, and the lost id is listed nowhere."""
    from backend.jobs import job_status

    queue = TrainingQueue(redis_conn, settings)

    def stopped(*args, **kwargs):
        raise ConnectionError("Redis went away")

    monkeypatch.setattr(Queue, "enqueue", stopped)
    with pytest.raises(ConnectionError):
        queue.request(7, "START_TRAINING", force=True)
    monkeypatch.undo()
    [phantom] = queue.recent_jobs(7)
    assert job_status(redis_conn, phantom) is None and queue._queued_job(7) is None
    answer = queue.request(7, "START_TRAINING", force=True)
    assert answer["status"] == "queued" and queue._queued_job(7) == answer["job_id"] != phantom
    from backend.app import create_app

    listed = create_app(settings).test_client().get("/jobs?project=7").get_json()["jobs"]
    assert [job["job_id"] for job in listed] == [answer["job_id"]]


@pytest.mark.parametrize("refusal, counted_again", [("too few annotated", 0), ("downloads failed", 2)])
def test_a_refused_job_spends_its_changes_only_when_too_few_tasks_are_annotated(
        settings, redis_conn, monkeypatch, refusal, counted_again):
    """Too few annotated tasks (known before any download): the next RETRAIN_AFTER changes ask
    again. Too few usable once the images were fetched (Label Studio's key refused, say): a fault to
    retry, so the changes count again."""
    queue = TrainingQueue(redis_conn, replace(settings, retrain_after=3))
    for _ in range(2):
        queue.request(7, "ANNOTATION_CREATED", force=False)
    job = queue.queue.enqueue("backend.training.train_project", 7)
    error = (training.TooFewAnnotated if refusal == "too few annotated" else training.NotEnoughAnnotations)(refusal)

    def refused(*args, **kwargs):
        raise error

    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("RQ_QUEUE", settings.queue_name)
    monkeypatch.setenv("MODEL_DIR", str(settings.model_dir))
    monkeypatch.setattr(training, "get_current_job", lambda: job)
    monkeypatch.setattr(training, "_train", refused)
    with pytest.raises(training.NotEnoughAnnotations, match=refusal):
        training.train_project(7)
    assert int(redis_conn.get(queue._key(7, "changes"))) == counted_again


def test_a_new_stage_leaves_the_last_ones_progress_behind(redis_conn, monkeypatch):
    """The status page read the box classifier's "10 / 10, ETA 0.0 min" all through the evaluation."""
    from rq.job import Job

    job = Job.create(print, connection=redis_conn)
    job.save()
    monkeypatch.setattr(training, "get_current_job", lambda: job)
    training._report("box classifier", iteration=10, max_iter=10, eta_seconds=0, loss=0.1, seconds_per_iter=2.0)
    training._report("evaluating", images=4)
    meta = Job.fetch(job.id, connection=redis_conn).get_meta()
    assert meta["stage"] == "evaluating" and meta["images"] == 4
    assert not set(training.STAGE_PROGRESS) & set(meta)
    training._report("training", iteration=1, max_iter=60)
    training._report("training", iteration=2, max_iter=60)  # the same stage: its progress moves on
    assert Job.fetch(job.id, connection=redis_conn).get_meta()["iteration"] == 2
