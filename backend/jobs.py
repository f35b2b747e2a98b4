"""Training requests through RQ: coalesced per project, answered at once, run on a worker.

Why not label-studio-ml 1.0.9's RQJobManager: it drops a job while another is queued, stores
results as a JSON string it then cannot read, and needs LABEL_STUDIO_ML_BACKEND_V2 for its
status. We keep RQ and write the small amount of bookkeeping ourselves:

* ``birads:<queue>:project:<id>:queued`` holds the id of the project's queued (not yet started) job.
  A request finding one folds into it (the job's ``events`` counter grows): at most one queued job
  per project. No lock is needed to fold, and no event is lost: the annotation was saved in Label
  Studio before its webhook was sent, and a job still queued when the webhook is checked reads the
  annotations later than that. Only enqueueing takes the project's lock (one job, never two); the
  job clears the key under that lock as its very first step, so a later request queues a new job.
* ``birads:<queue>:project:<id>:training`` is held by the job that trains the project (a lock
  naming the job, renewed from the job's own process, so it expires soon after that process
  dies however it was killed): with several
  workers a second job of the project waits for the first, then fine-tunes what it served, instead
  of training beside it from the same parent and racing it to the promotion.
* ``birads:<queue>:project:<id>:changes`` counts annotation events since the served version; annotation
  events start training only once it reaches RETRAIN_AFTER. START_TRAINING always trains.
* ``birads:<queue>:project:<id>:taken`` holds, per running job, the changes it took when it
  started. A job that ends clears its entry (given back to ``changes`` if it failed, unless it
  was refused for too few annotated tasks: then the next RETRAIN_AFTER changes ask again); one killed
  outright (the kernel's out-of-memory killer, a SIGKILLed worker) cannot, so the next request
  gives back the entries of jobs no longer running: their changes still count. A job runs while
  it holds a project's lock, or while RQ sees it started on a worker whose key RQ still renews.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import LockError, RedisError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.worker import Worker

from backend.settings import Settings

log = logging.getLogger(__name__)
TRAIN_FUNCTION = "backend.training.train_project"
KEEP_RESULTS = 7 * 24 * 3600
RECENT_JOBS = 50
TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED",
                "TASKS_DELETED", "START_TRAINING")
# the webhooks that report several changes, and the list of them they carry (Label Studio's
# WebhookAction: "Create Annotations From Predictions" sends ANNOTATIONS_CREATED; deleting tasks
# deletes their annotations and sends TASKS_DELETED alone, with the tasks' ids and nothing of
# whether they were annotated: each counts)
MANY_ANNOTATIONS = {"ANNOTATIONS_CREATED": "annotation", "ANNOTATIONS_DELETED": "annotations",
                    "TASKS_DELETED": "tasks"}
WAITING = {JobStatus.QUEUED.value, JobStatus.DEFERRED.value, JobStatus.SCHEDULED.value}
# the project's training lock expires this long after its holder last renewed it (every
# RENEW_EVERY_S, from a thread of the job's own process): a killed job frees its project soon
LOCK_TTL_S, RENEW_EVERY_S = 120, 30


def changes_in(action: str, body: dict) -> int:
    """How many annotation changes one webhook reports: one; a bulk one's annotations; none for a
    skipped task (an annotation created cancelled: nothing new to learn from)."""
    if action in MANY_ANNOTATIONS:
        listed = body.get(MANY_ANNOTATIONS[action])
        return len(listed) if isinstance(listed, list) else 1
    annotation = body.get("annotation")
    if action == "ANNOTATION_CREATED" and isinstance(annotation, dict) and annotation.get("was_cancelled") is True:
        return 0
    return 1


LOST = "lost"  # a job RQ still calls started whose worker is gone


class ProjectBusy(RuntimeError):
    """Another job of the project held it for longer than a job may run."""


class ProjectLost(RuntimeError):
    """The job's hold on its project expired while it ran: another job may train it now."""


class Holding:
    """A job's hold on its project (``TrainingQueue.training``). Its lock can expire while the job
    runs (Redis unreachable for LOCK_TTL_S); ``check``, at each progress report, takes it back where
    no other job has taken it, and stops the job where one has, so that two jobs never train one
    project at once. While Redis cannot be asked, the job goes on: the promotion's own check
    (``Registry.promote(replacing=...)``) still keeps a second job from serving over the first."""

    def __init__(self, project: int, lock=None) -> None:
        self.project = project
        self.lock = lock  # None: a job run outside RQ, which holds nothing
        self.lost = threading.Event()  # set by the renewer when the lock is no longer this job's

    def check(self) -> None:
        if not self.lost.is_set():
            return
        try:
            if self.lock.acquire(blocking=False, token=self.lock.local.token):
                log.warning("project %s: the training lock had expired; taken back", self.project)
                self.lost.clear()
                return
            holder = self.lock.redis.get(self.lock.name)
        except RedisError:  # cannot tell: train on (see above)
            return
        raise ProjectLost(f"project {self.project}: its training lock expired while this job ran and job "
                          f"{(holder or b'?').decode()} holds it now; stopped, nothing promoted")


@dataclass
class TrainingQueue:
    redis: Redis
    settings: Settings

    def _key(self, project: int, name: str) -> str:
        return project_key(self.settings.queue_name, project, name)

    @property
    def rq_timeout(self) -> int:
        """RQ's limit on a job: up to JOB_TIMEOUT waiting for the project's running job (``training``),
        and JOB_TIMEOUT to run once it holds the project, so a wait does not eat into its run."""
        return 2 * self.settings.job_timeout

    @property
    def queue(self) -> Queue:
        return Queue(self.settings.queue_name, connection=self.redis)

    def _lock(self, project: int, wait: float = 0.5):
        # polled every 2 ms, not redis-py's 100 ms, and given up (503) after ``wait``: a webhook
        # waiting here must still answer within Label Studio's 1 s; the lock is held for milliseconds
        return self.redis.lock(self._key(project, "lock"), timeout=10, blocking_timeout=wait, sleep=0.002)

    def request(self, project: int, reason: str, force: bool, changes: int = 1) -> dict:
        """Enqueue a training job for ``project``, or fold this request into the queued one.

        A request carries nothing but the project and how many ``changes`` it reports (one webhook
        counts RETRAIN_AFTER at most): the job reads the label config, tasks and annotations from
        Label Studio's API with the backend's own key."""
        self._reclaim_abandoned(project)
        if not force:  # INCRBY is atomic: counting needs no lock, and most events only count
            step = min(changes, self.settings.retrain_after)
            changes = int(self.redis.incrby(self._key(project, "changes"), step))
            if changes < self.settings.retrain_after:
                return {"status": "waiting", "changes": changes, "retrain_after": self.settings.retrain_after}
        queued = self._queued_job(project)
        if queued is None:
            with self._lock(project):
                queued = self._queued_job(project)
                if queued is None:
                    left = self._changes(project)
                    if not force and left < self.settings.retrain_after:
                        # a job started since the count was read and took it (``started`` holds this
                        # lock): it reads this event's annotation, so a second job would learn nothing new
                        return {"status": "taken", "changes": left, "retrain_after": self.settings.retrain_after}
                    return self._enqueue(project, reason)
        events = int(self.redis.incr(events_key(queued)))
        return {"status": "coalesced", "job_id": queued, "events": events}

    def _changes(self, project: int) -> int:
        return int(self.redis.get(self._key(project, "changes")) or 0)

    def _enqueue(self, project: int, reason: str) -> dict:
        # the bookkeeping first, in one transaction, then the job under the id it names: stopped in
        # between, the id names no RQ job, which ``_queued_job`` and ``job_status`` both see as none
        job_id = str(uuid.uuid4())
        with self.redis.pipeline() as bookkeeping:
            bookkeeping.set(events_key(job_id), 1, ex=KEEP_RESULTS)
            bookkeeping.set(self._key(project, "queued"), job_id)
            bookkeeping.lpush(self._key(project, "jobs"), job_id)
            bookkeeping.ltrim(self._key(project, "jobs"), 0, RECENT_JOBS - 1)
            bookkeeping.execute()
        job = self.queue.enqueue(
            TRAIN_FUNCTION, project, job_id=job_id, job_timeout=self.rq_timeout,
            result_ttl=KEEP_RESULTS, failure_ttl=KEEP_RESULTS,
            meta={"project": project, "reason": reason, "stage": "queued"},
            description=f"train BI-RADS detector for project {project}")
        log.info("project %s: training job %s queued (%s)", project, job.id, reason)
        return {"status": "queued", "job_id": job.id}

    def _queued_job(self, project: int) -> str | None:
        """The id of the project's job that has not started yet (two cheap reads, no job load)."""
        job_id = self.redis.get(self._key(project, "queued"))
        if not job_id:
            return None
        status = self.redis.hget(Job.key_for(job_id.decode()), "status")
        return job_id.decode() if status and status.decode() in WAITING else None

    def started(self, project: int, job_id: str) -> int:
        """Called first thing by the job: stop folding events into it; take the change count
        (kept under the job's id until it ends: ``ended``)."""
        with self._lock(project, wait=10):  # the worker can wait; nothing times it out
            queued = self.redis.get(self._key(project, "queued"))
            if queued and queued.decode() == job_id:
                self.redis.delete(self._key(project, "queued"))
            # one script, so that no failure can take the count without recording who took it
            return int(self.redis.eval(_TAKE_CHANGES, 2, self._key(project, "changes"),
                                       self._key(project, "taken"), job_id) or 0)

    def ended(self, project: int, job_id: str, give_back: bool) -> None:
        """Called last by the job: one that failed gives its changes back, so they still count
        towards the next retrain (one refused for too few annotations does not: the next
        RETRAIN_AFTER changes ask again)."""
        self._settle(project, job_id, give_back=give_back)

    def _settle(self, project: int, job_id: str, give_back: bool) -> None:
        # one script: a count is given back once, never twice, never lost half way
        self.redis.eval(_SETTLE_CHANGES, 2, self._key(project, "taken"), self._key(project, "changes"),
                        job_id, int(give_back))

    def _reclaim_abandoned(self, project: int) -> None:
        """Give back the changes of jobs killed before they could (module docstring)."""
        for job_id in self.redis.hkeys(self._key(project, "taken")):
            if not self._running(project, job_id.decode()):
                log.warning("project %s: training job %s was killed; its changes count again", project,
                            job_id.decode())
                self._settle(project, job_id.decode(), give_back=True)

    def _running(self, project: int, job_id: str) -> bool:
        """Whether the job still runs: it holds the project's training lock (renewed by its own
        process), or RQ sees it started on a worker whose key RQ still renews (a SIGKILLed
        worker's expires within 90 s, by Redis's clock, whatever the machines' clocks say)."""
        if self.redis.get(self._key(project, "training")) == job_id.encode():
            return True
        status, worker = self.redis.hmget(Job.key_for(job_id), "status", "worker_name")
        return bool(status and status.decode() == JobStatus.STARTED.value and worker
                    and _worker_alive(self.redis, worker.decode()))

    @contextmanager
    def training(self, project: int, job_id: str | None = None,
                 on_wait: Callable[[], None] = lambda: None) -> Iterator[Holding]:
        """Hold the project for a job's run (module docstring): wait while another job holds it,
        calling ``on_wait`` first, for up to JOB_TIMEOUT. The lock lives while its holder's process
        renews it: a holder killed in any way frees the project within LOCK_TTL_S."""
        timeout = self.settings.job_timeout
        lock = self.redis.lock(self._key(project, "training"), timeout=LOCK_TTL_S, thread_local=False)
        deadline, waited = time.monotonic() + timeout, False
        while not lock.acquire(blocking=False, token=job_id):
            if not waited:
                log.info("project %s: waiting for its running training job", project)
                on_wait()
                waited = True
            if time.monotonic() > deadline:
                raise ProjectBusy(f"project {project}: another training job held it for JOB_TIMEOUT={timeout} s")
            time.sleep(1)
        stop, holding = threading.Event(), Holding(project, lock)
        renewer = threading.Thread(target=_renew, args=(lock, stop, holding), daemon=True)
        renewer.start()
        try:
            yield holding
        finally:
            stop.set()
            renewer.join()
            try:
                lock.release()
            except LockError:  # it expired first (Redis unreachable for LOCK_TTL_S): nothing to free
                log.warning("project %s: the training lock had expired before the job ended", project)

    def recent_jobs(self, project: int) -> list[str]:
        return [j.decode() for j in self.redis.lrange(self._key(project, "jobs"), 0, RECENT_JOBS - 1)]


def _renew(lock, stop: threading.Event, holding: Holding) -> None:
    """Keep the project's lock for as long as the job's process lives; mark it lost once it has
    expired (a Redis outage longer than LOCK_TTL_S), for ``Holding.check`` to take back."""
    while not stop.wait(RENEW_EVERY_S):
        if holding.lost.is_set():
            continue
        try:
            lock.extend(LOCK_TTL_S, replace_ttl=True)
        except LockError as exc:  # no longer ours: expired, perhaps taken by another job
            log.error("project %s: the training lock was lost: %s", holding.project, exc)
            holding.lost.set()
        except RedisError as exc:  # unreachable for now: try again before it expires
            log.warning("project %s: the training lock could not be renewed: %s", holding.project, exc)


# Lua, run atomically by Redis. KEYS: changes, taken; ARGV: job id. Returns the count taken.
_TAKE_CHANGES = """
local taken = tonumber(redis.call('GETSET', KEYS[1], 0) or 0)
if taken > 0 then redis.call('HSET', KEYS[2], ARGV[1], taken) end
return taken
"""
# KEYS: taken, changes; ARGV: job id, 1 to give the count back (0: spent)
_SETTLE_CHANGES = """
local taken = redis.call('HGET', KEYS[1], ARGV[1])
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 and ARGV[2] == '1' and taken then
  redis.call('INCRBY', KEYS[2], taken)
end
"""


def project_key(queue_name: str, project: int, name: str) -> str:
    """A project's bookkeeping key in Redis (module docstring)."""
    return f"birads:{queue_name}:project:{project}:{name}"


def events_key(job_id: str) -> str:
    """How many requests a job stands for (it grows while the job waits in the queue)."""
    return f"birads:job:{job_id}:events"


def _worker_alive(redis: Redis, worker_name: str | None) -> bool:
    """A worker's key, which it renews while it lives (a SIGKILLed one's expires within 90 s)."""
    return bool(worker_name) and bool(redis.exists(Worker.redis_worker_namespace_prefix + worker_name))


def job_status(redis: Redis, job_id: str) -> dict | None:
    try:
        job = Job.fetch(job_id, connection=redis)
    except (NoSuchJobError, ValueError):  # rq refuses ids it could never have made with ValueError
        return None
    status = job.get_status()
    progress = dict(job.get_meta(), events=int(redis.get(events_key(job_id)) or 1))
    answer = {"job_id": job.id, "status": str(status.value if hasattr(status, "value") else status),
              "progress": progress, "enqueued_at": job.enqueued_at, "started_at": job.started_at,
              "ended_at": job.ended_at}
    project = job.meta.get("project")
    holds_project = project is not None and redis.get(project_key(job.origin, project, "training")) == job.id.encode()
    if status == JobStatus.STARTED and not holds_project and not _worker_alive(redis, job.worker_name):
        # RQ still says "started" until a maintenance run, minutes later or never without a worker
        answer.update(status=LOST, error="its worker stopped (shut down, killed or out of memory) while it ran; "
                                         "the project's changes count again towards the next job")
    elif status == JobStatus.FINISHED:
        answer["result"] = job.return_value()
    elif status == JobStatus.FAILED:
        error = job.exc_info or ""
        answer["error"] = error.strip().splitlines()[-1] if error.strip() else "failed (worker lost?)"
    return answer
