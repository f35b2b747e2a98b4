"""The WSGI app Label Studio talks to (gunicorn: ``backend.app:create_app()``).

Endpoints: GET /health, POST /setup, POST /predict, POST /webhook, GET /versions, and ours:
GET /jobs/<id> and GET /jobs?project=<id> for training progress, GET / the status page. Every bad input gets an HTTP
status with ``{"error": message}`` and one log line; nothing trains inside a request.

Trust: what Label Studio sends with basic auth (/health, /setup, /predict, START_TRAINING) is checked
when BASIC_AUTH_USER is set. Annotation webhooks carry no credentials (WEBHOOK_SECRET, if set, in
an X-Webhook-Secret header): they are triggers only, for projects that were set up here, and the
training job reads the label config, tasks and annotations from Label Studio's API itself. An
address that keeps presenting wrong credentials is refused for a while (AUTH_MAX_FAILURES).

label-studio-ml 1.0.9's own Flask app is not used: its manager keeps models per process in ways
that break with several gunicorn workers and its training bookkeeping is unsound (see jobs.py).
We keep its LabelStudioMLBase contract (backend.detector) and write the routes ourselves.
"""

from __future__ import annotations

import functools
import hmac
import logging
import threading
import time
from pathlib import Path

from flask import Flask, jsonify, render_template, request
from redis import Redis
from redis.exceptions import RedisError

from backend import status
from backend.detector import UNTRAINED, BiradsDetector, ModelCache, RecentFailures, RequestError
from backend.jobs import TRAIN_EVENTS, TrainingQueue, changes_in, job_status
from backend.labels import LabelConfigError, parse_label_config
from backend.limits import ARRIVED, BodyLimits, FailedAttempts
from backend.services import Services
from backend.settings import Settings
from backend.training import TASK_LISTS
from model.io import write_atomic

log = logging.getLogger("backend")


MAX_PROJECT_DIGITS = 12
# every answer: no sniffing a JSON body into a page, nothing of a patient's image kept by a cache
# or leaked in a Referer
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
# the status page: its own inline styles and drawings, nothing loaded, run or framed from elsewhere
PAGE_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; "
               "base-uri 'none'; form-action 'none'")
WEBHOOK_SECRET_HEADER = "X-Webhook-Secret"
STATUS_REFRESH_SECONDS = 5


def project_id(value: object) -> int:
    """Label Studio sends "<id>.<created timestamp>" in /setup and /predict, an object in webhooks."""
    if isinstance(value, dict):
        value = value.get("id")
    text = str(value).split(".")[0]
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_PROJECT_DIGITS or int(text) < 1:
        # the id names a folder: nothing but a positive integer of sane length reaches the disk
        raise RequestError(f"missing or invalid project {str(value)[:40]!r}")
    return int(text)


class Backend:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services = Services(settings)
        self.models = ModelCache(self.services)
        self.recent_failures = RecentFailures()
        self._redis: Redis | None = None

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            if not self.settings.redis_url:
                raise RedisError("REDIS_URL is not set (start with `make run` for the embedded Redis)")
            self._redis = Redis.from_url(self.settings.redis_url, socket_connect_timeout=0.5, socket_timeout=0.5)
        return self._redis

    def training_queue(self) -> TrainingQueue:
        return TrainingQueue(self.redis, self.settings)

    def label_config(self, project: int, given: str | None) -> str:
        """The config sent with the request, else the one remembered from /setup."""
        path = self.services.project_dir(project) / "label_config.xml"
        if given is not None and not isinstance(given, str):
            raise RequestError(f"label_config must be the XML as a string, not {type(given).__name__}")
        if given:
            parse_label_config(given)  # never remember a config we cannot use
            if not path.is_file() or path.read_text() != given:
                write_atomic(path, given)
            return given
        if path.is_file():
            return path.read_text()
        raise RequestError(f"project {project}: no label config (call /setup first)")

    def detector(self, project: int, label_config: str | None) -> BiradsDetector:
        return BiradsDetector(project, self.label_config(project, label_config), self.services, self.models,
                              self.recent_failures)

    def redis_or_none(self) -> Redis | None:
        try:
            return self.redis
        except RedisError:
            return None


def _listed(info: dict) -> dict:
    """A version's description as /versions lists it: its task lists (as long as the project) stay in
    its version.json."""
    return {key: value for key, value in info.items() if key not in TASK_LISTS}


def _json_body() -> dict:
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # deeply nested JSON
        raise RequestError("request body nests too deeply") from None
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    return body


def _verify_in_background(backend: Backend) -> threading.Thread:
    """Check every project's served weights against their checksums now, once per process, so that
    the first /health (Label Studio waits 1 s for it) finds them checked: hashing costs about 0.15 s
    per R101 model."""
    def verify() -> None:
        try:
            status.served_parts(backend.services, backend.models.serving)  # what /health computes
        except Exception:  # noqa: BLE001  (/health reports it; here it must not kill the thread)
            log.exception("checking the served versions at start failed")

    thread = threading.Thread(target=verify, name="verify-served-models", daemon=True)
    thread.start()
    return thread


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    backend = Backend(settings)
    app = Flask(__name__)
    app.config["backend"] = backend
    app.wsgi_app = BodyLimits(app.wsgi_app, settings.max_request_bytes, settings.request_timeout)
    app.config["verifier"] = _verify_in_background(backend)

    # counted apart: a webhook sent with a mistyped secret must not lock Label Studio out of /predict
    login_failures = FailedAttempts(settings.auth_max_failures, settings.auth_failure_window)
    secret_failures = FailedAttempts(settings.auth_max_failures, settings.auth_failure_window)

    def basic_auth_refusal() -> tuple | None:
        """None where the request's basic auth passes; else the answer (401, or 429 for an address
        that presented too many wrong ones)."""
        return _check(login_failures, _authorized(settings), request.authorization is not None,
                      "basic auth", {"WWW-Authenticate": "Basic"}, request.headers.get("Authorization", ""))

    def requires_auth(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            return basic_auth_refusal() or view(*args, **kwargs)
        return wrapped

    @app.after_request
    def security_headers(response):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if response.mimetype == "text/html":
            response.headers.setdefault("Content-Security-Policy", PAGE_POLICY)
            response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    @app.errorhandler(RequestError)
    @app.errorhandler(LabelConfigError)
    def bad_request(error):
        status = getattr(error, "status", 400)
        log.warning("%s %s -> %d: %s", request.method, _logged_path(), status, _escaped(str(error)))
        return jsonify({"error": str(error)}), status

    @app.errorhandler(RedisError)
    def queue_down(error):
        log.error("%s %s -> 503: training queue unavailable: %s", request.method, _logged_path(), error)
        return jsonify({"error": f"training queue unavailable: {error}"}), 503

    @app.errorhandler(Exception)
    def unexpected(error):
        if hasattr(error, "code") and hasattr(error, "description"):  # werkzeug HTTP errors
            return jsonify({"error": error.description}), error.code
        log.exception("%s %s -> 500", request.method, _logged_path())
        return jsonify({"error": f"internal error: {error.__class__.__name__}: {error}"}), 500

    @app.route("/", methods=["GET"])
    @requires_auth
    def status_page():
        from datetime import UTC, datetime

        facts = status.collect(backend.services, backend.redis_or_none(), backend.models.serving)
        return render_template("status.html", refresh=STATUS_REFRESH_SECONDS, chart=status.chart_points,
                               now=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"), **facts)

    @app.route("/health", methods=["GET"])
    @requires_auth
    def health():
        # Label Studio only needs a 200: degraded parts are named, never a reason to refuse
        failing = {p.name: p.detail for p in status.health(backend.services, backend.redis_or_none(),
                                                           backend.models.serving) if not p.ok}
        return jsonify({"status": "DEGRADED" if failing else "UP", "degraded": failing,
                        "model_class": BiradsDetector.__name__,
                        "model_dir": str(Path(settings.model_dir).resolve())})

    @app.route("/setup", methods=["POST"])
    @requires_auth
    def setup():
        body = _json_body()
        project = project_id(body.get("project"))
        detector = backend.detector(project, body.get("schema"))
        return jsonify({"model_version": detector.model_version})

    @app.route("/predict", methods=["POST"])
    @requires_auth
    def predict():
        arrived = request.environ.get(ARRIVED, time.monotonic())  # the budget counts the body's upload too
        body = _json_body()
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise RequestError("'tasks' must be a non-empty list")
        malformed = next((number for number, task in enumerate(tasks) if not isinstance(task, dict)
                          or "id" not in task or not isinstance(task.get("data"), dict)), None)
        if malformed is not None:  # never sent by Label Studio: the request itself is wrong
            raise RequestError(f"task {malformed}: not a JSON object with an 'id' and a 'data' object")
        project = project_id(body.get("project") or tasks[0].get("project"))
        detector = backend.detector(project, body.get("label_config"))
        started = time.perf_counter()
        results = detector.predict(tasks, started=arrived)
        version = results[0]["model_version"]  # what predicted them; asking again could name a newer one
        log.info("project %s: predicted %d tasks with %s in %.2f s", project, len(tasks), version,
                 time.perf_counter() - started)
        return jsonify({"results": results, "model_version": version})

    def unknown_sender() -> tuple | None:
        """Before a webhook's body is parsed: where WEBHOOK_SECRET and basic auth are both set, a
        request whose credential does not pass is refused, so an outsider's megabytes of JSON are
        never parsed. One credential is checked (lockout first, a wrong one counted): the secret
        header where there is one (Label Studio's annotation webhooks), else basic auth where there
        is (its START_TRAINING), else the missing secret; so a guess of one beside a constant wrong
        other learns nothing. The action then decides which of the two it needed."""
        if not (settings.webhook_secret and settings.basic_auth_user):
            return None
        if WEBHOOK_SECRET_HEADER not in request.headers and request.authorization is not None:
            return basic_auth_refusal()
        return secret_refusal()

    def secret_refusal() -> tuple | None:
        return _check(secret_failures, _secret_matches(settings), WEBHOOK_SECRET_HEADER in request.headers,
                      "the WEBHOOK_SECRET header", credential=request.headers.get(WEBHOOK_SECRET_HEADER, ""))

    @app.route("/webhook", methods=["POST"])
    def webhook():
        if (refusal := unknown_sender()) is not None:
            return refusal
        body = _json_body()
        action = body.get("action")
        if action not in TRAIN_EVENTS:
            return jsonify({"status": "ignored", "action": action}), 200
        # Label Studio sends basic auth with START_TRAINING, the secret header with the others
        refusal = basic_auth_refusal() if action == "START_TRAINING" else secret_refusal()
        if refusal:
            return refusal
        changes = 1 if action == "START_TRAINING" else changes_in(action, body)
        return _queue_training(body.get("project"), action, changes)

    @app.route("/train", methods=["POST"])
    @requires_auth
    def legacy_train():
        # "Start training" where Label Studio runs with its webhook flag off (train.json): what
        # START_TRAINING does; the annotations it carries are not used, the job reads them itself
        return _queue_training(_json_body().get("project"), "START_TRAINING")

    def _queue_training(project_field: object, action: str, changes: int = 1):
        project = project_id(project_field)
        if not backend.services.is_connected(project):  # an outsider's request creates nothing
            raise RequestError(f"project {project} is not connected to this backend (no /setup yet)", 404)
        if not changes:
            return jsonify({"status": "ignored", "action": action,
                            "why": "no annotation to count (a skipped task, or none listed)"}), 200
        answer = backend.training_queue().request(project, reason=action, force=action == "START_TRAINING",
                                                  changes=changes)
        return jsonify(answer), 201 if answer["status"] == "queued" else 200

    @app.route("/versions", methods=["GET"])
    @requires_auth
    def versions():
        # Label Studio's GET names no project: every project's then; ours may (?project=ID)
        asked = request.args.get("project")
        found = []
        for project in backend.services.projects() if asked is None else [project_id(asked)]:
            registry = backend.services.registry(project)
            found += [dict(_listed(registry.info(v)), project=project, current=v == registry.current())
                      for v in registry.versions()]
        return jsonify({"versions": [v["version"] for v in found], "details": found})

    @app.route("/jobs/<job_id>", methods=["GET"])
    @requires_auth
    def job(job_id: str):
        answer = job_status(backend.redis, job_id)
        if answer is None:
            raise RequestError(f"no job {job_id}", 404)
        return jsonify(answer)

    @app.route("/jobs", methods=["GET"])
    @requires_auth
    def jobs():
        project = project_id(request.args.get("project"))
        ids = backend.training_queue().recent_jobs(project)
        serving = backend.models.serving(project)  # a broken model must not hide the jobs that made it
        answer = {"project": project, "current_version": serving.version or (None if serving.problem else UNTRAINED),
                  "jobs": [status for i in ids if (status := job_status(backend.redis, i))]}  # expired: gone
        if serving.problem:
            answer["problem"] = serving.problem
        return jsonify(answer)

    return app


def _check(failures: FailedAttempts, passed: bool, presented: bool, what: str,
           headers: dict | None = None, credential: str = "") -> tuple | None:
    """None where the credentials passed; else 401, counting them (``credential``, as presented)
    against the client's address if it presented any (a request without them guesses nothing, the
    same wrong ones again nothing new); 429 for an address that presented too many different wrong
    ones lately, whatever it sends now."""
    address = request.remote_addr or "unknown"
    wait = failures.attempt(address, passed, presented, credential)
    if wait:
        log.warning("%s %s -> 429: %s from %s: too many wrong ones, %d s to wait", request.method,
                    _logged_path(), what, address, wait)
        return (jsonify({"error": f"too many wrong credentials from this address: try again in {wait} s"}),
                429, {"Retry-After": str(wait)})
    if passed:
        return None
    log.warning("%s %s -> 401: %s %s from %s", request.method, _logged_path(), "wrong" if presented else "no",
                what, address)
    return jsonify({"error": "authentication required"}), 401, headers or {}


def _escaped(text: str) -> str:
    """``text`` as a log line may show it: line breaks and terminal escapes (a decoded %0A, %1B)
    escaped, so no caller can forge a line of its own in it."""
    return text.encode("unicode_escape").decode("ascii")


def _logged_path() -> str:
    return _escaped(request.path)


def _same(given: str | None, expected: str) -> bool:
    return hmac.compare_digest((given or "").encode(), expected.encode())  # no timing side channel


def _authorized(settings: Settings) -> bool:
    """Basic auth as configured (anything goes when BASIC_AUTH_USER is not set)."""
    if not settings.basic_auth_user:
        return True
    auth = request.authorization
    user_ok = _same(auth.username if auth else "", settings.basic_auth_user)
    return bool(auth) and user_ok & _same(auth.password if auth else "", settings.basic_auth_pass)


def _secret_matches(settings: Settings) -> bool:
    return not settings.webhook_secret or _same(request.headers.get(WEBHOOK_SECRET_HEADER), settings.webhook_secret)
