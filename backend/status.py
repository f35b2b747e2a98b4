"""What the status page at ``/`` shows: per project the served version, the running or queued job,
the version history with holdout metrics, recent failures; and the health of each part.

Everything comes from what the backend already keeps: the model registries on disk, the job ids
per project in Redis and RQ's own job records and worker registry. Read-only.
"""

from __future__ import annotations

import logging
import math
import os
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from redis.exceptions import RedisError
from rq import Worker

from backend.jobs import LOST, TrainingQueue, job_status
from backend.services import Services
from model.modeldir import MODEL_FILES, is_model_dir

log = logging.getLogger(__name__)
ACTIVE = ("queued", "started", "deferred", "scheduled")
RECENT_FAILURES = 5
CERTIFICATE_WARNING_DAYS = 14


@dataclass
class Part:
    name: str
    ok: bool
    detail: str


@dataclass
class ProjectStatus:
    project: int
    served: str | None
    served_info: dict = field(default_factory=dict)
    versions: list[dict] = field(default_factory=list)     # oldest first, with holdout metrics
    active: list[dict] = field(default_factory=list)       # running or queued jobs
    failures: list[dict] = field(default_factory=list)     # failed, or lost with their worker
    jobs_known: bool = False                                # the queue answered
    problem: str | None = None                              # why the current version is not served

    @property
    def latest_metrics(self) -> dict:
        for version in reversed(self.versions):
            if version.get("metrics"):
                return version["metrics"]
        return {}


def model_store(model_dir: Path) -> Part:
    """Writable model store: a training job could register a version there."""
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=model_dir, prefix=".health-"):
            pass
        return Part("model store", True, str(model_dir.resolve()))
    except OSError as exc:
        return Part("model store", False, f"{model_dir}: not writable ({exc.strerror or exc})")


def queue_parts(services: Services, redis) -> list[Part]:
    """Redis reachable, and how many RQ workers listen on our queue."""
    if redis is None:
        return [Part("queue", False, "REDIS_URL is not set"), Part("workers", False, "no queue")]
    try:
        redis.ping()
        workers = [w for w in Worker.all(connection=redis) if services.settings.queue_name in w.queue_names()]
    except RedisError as exc:
        return [Part("queue", False, f"unreachable ({exc})"), Part("workers", False, "unknown: queue down")]
    busy = sum(1 for w in workers if w.get_state() == "busy")
    return [Part("queue", True, f"{services.settings.queue_name}"),
            Part("workers", bool(workers), f"{len(workers)} listening, {busy} busy" if workers
                 else "none listening: training jobs wait until a worker starts")]


def starter_parts(initial_weights: str) -> list[Part]:
    """INITIAL_WEIGHTS where it names a local folder or file that cannot be what it was meant to
    be (an empty folder mounted into the container, a mistyped path): projects without a version
    of their own would then quietly get no boxes. URLs and zoo configs are read by the first
    training, not here."""
    if not initial_weights or "://" in initial_weights or initial_weights.startswith("zoo:"):
        return []
    path = Path(initial_weights)
    if is_model_dir(path):
        return [Part("starter model", True, str(path))]
    if path.is_file():
        return [Part("starter model", True, f"{path}: weights for the first training, no starter served")]
    what = f"a folder without a model ({', '.join(MODEL_FILES)} needed)" if path.is_dir() else "not found"
    return [Part("starter model", False, f"INITIAL_WEIGHTS={initial_weights}: {what}; projects without a "
                 "version of their own are served no boxes")]


def served_parts(services: Services, serving) -> list[Part]:
    """One failing part per project whose current version cannot be served (``serving``: the
    ModelCache's, which also knows versions that failed to load)."""
    parts = []
    for project in services.projects():
        found = serving(project)
        if found.problem:
            parts.append(Part(f"project {project}", False, f"{found.problem}; serving "
                              f"{found.version or 'nothing (predictions answer 503)'}"))
    return parts


def certificate_parts(cert_file: Path | None, now: float | None = None) -> list[Part]:
    """The HTTPS certificate's expiry, failing from CERTIFICATE_WARNING_DAYS before it: Label Studio
    refuses an expired one, and a renewal takes a while to arrange. gunicorn's threaded worker reads
    the files for each new connection, so the file is what is served (a renewal needs no restart)."""
    if cert_file is None:
        return []
    try:
        # the standard library's own decoder (a helper of its tests): no new dependency for one date
        decode = ssl._ssl._test_decode_cert
    except AttributeError:
        return [Part("certificate", True, "expiry not checked: this Python cannot decode certificates")]
    try:
        until = ssl.cert_time_to_seconds(decode(str(cert_file))["notAfter"])
    except (OSError, ssl.SSLError, ValueError, KeyError) as exc:
        return [Part("certificate", False, f"{cert_file}: expiry unreadable ({exc})")]
    days = (until - (time.time() if now is None else now)) / 86400
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(until))
    if days < 0:
        return [Part("certificate", False, f"expired on {date}: Label Studio refuses it; renew {cert_file}")]
    if days < CERTIFICATE_WARNING_DAYS:
        left = f"in {math.floor(days)} days" if days >= 1 else "within a day"
        return [Part("certificate", False, f"expires on {date}, {left}: renew {cert_file}")]
    return [Part("certificate", True, f"valid until {date} ({math.floor(days)} days)")]


def health(services: Services, redis, serving=None) -> list[Part]:
    """Every part /health and the status page report: model store, queue, workers, served versions
    and, over HTTPS, the certificate."""
    return [model_store(Path(services.settings.model_dir)), *queue_parts(services, redis),
            *starter_parts(services.settings.initial_weights), *served_parts(services, serving or services.serving),
            *certificate_parts(services.settings.tls_cert_file)]


def project_status(services: Services, project: int, redis, serving=None) -> ProjectStatus:
    """``serving``: as for ``health``, so the page names the version the health lines speak of."""
    registry = services.registry(project)
    found = (serving or services.serving)(project)
    served = found.version
    versions = _with_parent_deltas([registry.info(v) for v in registry.versions()])
    status = ProjectStatus(project, served, next((v for v in versions if v["version"] == served), {}),
                           sorted(versions, key=lambda v: str(v.get("created_at", ""))), problem=found.problem)
    if redis is not None:
        try:
            jobs = [job_status(redis, i) for i in TrainingQueue(redis, services.settings).recent_jobs(project)]
            status.jobs_known = True
        except RedisError as exc:
            log.warning("status page: jobs of project %s unavailable: %s", project, exc)
            jobs = []
        jobs = [j for j in jobs if j]
        status.active = [j for j in jobs if j["status"] in ACTIVE]
        status.failures = [j for j in jobs if j["status"] in ("failed", LOST)][:RECENT_FAILURES]
    return status


COMPARED = ("ap50", "ap50_lesion", "category_accuracy")


def _with_parent_deltas(versions: list[dict]) -> list[dict]:
    """Each version's holdout metrics minus its parent's on the same held-out tasks (``delta``:
    ``served_metrics``, the version served when it trained, measured beside it; the parent's own
    metrics came from its own, older held-out set), where both are defined (box AP is -1 on tasks
    without a lesion)."""
    def defined(metrics: dict, key: str) -> bool:
        return isinstance(metrics.get(key), int | float) and metrics[key] >= 0

    for version in versions:
        mine, theirs = version.get("metrics") or {}, version.get("served_metrics") or {}
        version["delta"] = {k: mine[k] - theirs[k] for k in COMPARED if defined(mine, k) and defined(theirs, k)}
    return versions


def collect(services: Services, redis, serving=None) -> dict:
    """Everything the page shows."""
    parts = health(services, redis, serving)
    reachable = redis if parts[1].ok else None
    return {"parts": parts,
            "projects": [project_status(services, p, reachable, serving) for p in services.projects()],
            "host": os.uname().nodename}


def chart_points(versions: list[dict], key: str, width: int = 260, height: int = 80) -> str:
    """SVG polyline points of holdout ``key`` across versions (0..1 on the y axis)."""
    values = [(i, v["metrics"][key]) for i, v in enumerate(versions)
              if isinstance((v.get("metrics") or {}).get(key), int | float)]
    if not values:
        return ""
    step = width / max(1, len(versions) - 1)
    return " ".join(f"{i * step:.1f},{height - value * height:.1f}" for i, value in values)
