"""Where Label Studio meets the model: the LabelStudioMLBase subclass (predict).

predict: task images -> the served model version -> boxes as Label Studio regions, labelled only
with labels of the project's config. Training is not LabelStudioMLBase.fit's business here: a
webhook only asks backend.jobs for a (coalesced) job, which reads everything from Label Studio.

Task score (``score`` of each prediction) is ``Detection.confidence`` of the boxes shown (under
SHOW_BOXES, with a label in the config): the model's confidence in the whole pre-annotation.
Sorting Label Studio's Data Manager by prediction score, ascending, puts the tasks the model is
least sure of first.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from label_studio_ml.model import LabelStudioMLBase

from backend.images import ImageError, through_label_studio
from backend.labels import LabelMap, parse_label_config
from backend.services import STARTER_PREFIX, Services
from backend.settings import Settings
from model.evaluation.evaluate import LOW_SCORE, displayed
from model.records import Box, Detection
from model.regions import to_region
from model.registry import Serving

log = logging.getLogger(__name__)
UNTRAINED = "untrained"
# a batch's downloads get at least this, however little of the budget is left (within the 10 s the
# default budget leaves under Label Studio's 100 s): 1 s cut off a first small download on a loaded
# 2-core machine, so that "Retrieve predictions" stored nothing
MIN_FETCH_SECONDS = 3.0


class RequestError(ValueError):
    """A bad request: answered with ``status`` and the message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ModelUnavailable(RequestError):
    """The project has versions, and none of them can be served."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 503)


class ModelCache:
    """One loaded predictor per served model directory and process, shared by the projects it
    serves (every project still on the starter model: one copy, not one each); a project's
    predictor changes when its served version does, and one no project serves any more is let go.

    A version that fails to load is remembered as unusable here, and the registry's fallback (the
    last good version) is served instead, as for a version that fails its checksums; a request
    RELOAD_AFTER_S later tries it again (the failure may have been passing: memory, a network disk)."""

    RELOAD_AFTER_S = 300.0

    def __init__(self, services: Services) -> None:
        self.services = services
        self._served: dict[int, tuple[str, str]] = {}  # project -> (version, model directory): its key
        # (version, model directory) -> predictor: a starter replaced in place is another version
        self._loaded: dict[tuple[str, str], tuple[object, threading.Lock]] = {}
        # one load at a time per key, never holding up other versions' requests (never removed:
        # a small lock per version this process has served)
        self._loading: dict[tuple[str, str], threading.Lock] = {}
        # project (None: every project's) -> version -> when it failed to load (time.monotonic)
        self._unusable: dict[int | None, dict[str, float]] = {}
        self._reported: set[tuple] = set()
        self._lock = threading.Lock()  # the dictionaries; never held while a model loads

    def _unusable_for(self, project: int) -> frozenset[str]:
        with self._lock:
            return frozenset(version for owner in (project, None) for version in self._unusable.get(owner, {}))

    def _retry_failed_loads(self, project: int) -> None:
        """Forget the project's (and the starter's) load failures older than RELOAD_AFTER_S, so that
        this request tries those versions again; until then /health and the status page report them."""
        since = time.monotonic() - self.RELOAD_AFTER_S
        with self._lock:
            for owner in (project, None):
                marks = self._unusable.get(owner, {})
                for version in [v for v, failed in marks.items() if failed <= since]:
                    del marks[version]

    def serving(self, project: int) -> Serving:
        serving = self.services.serving(project, self._unusable_for(project))
        if serving.problem and (project, serving.problem) not in self._reported:
            self._reported.add((project, serving.problem))
            log.error("project %s: %s; serving %s instead", project, serving.problem,
                      serving.version or "nothing")
        return serving

    def _checked(self, project: int) -> Serving:
        serving = self.serving(project)
        if serving.version is None and serving.problem:
            raise ModelUnavailable(f"project {project}: {serving.problem}, and no earlier version is sound")
        return serving

    def version(self, project: int) -> str:
        return self._checked(project).version or UNTRAINED

    def get(self, project: int):
        """(version, predictor or None, lock serialising inference on it)."""
        self._retry_failed_loads(project)
        while True:  # each failed load marks one more version unusable for RELOAD_AFTER_S: this ends
            serving = self._checked(project)
            if serving.version is None:
                return UNTRAINED, None, None
            key = (serving.version, str(Path(serving.path).resolve()))
            with self._lock:
                loaded = self._loaded.get(key)
                loading = self._loading.setdefault(key, threading.Lock())
            if loaded is None:
                with loading:  # a second request for this version waits for the first's load
                    loaded = self._loaded.get(key)
                    if loaded is None and self._checked(project).version == serving.version:
                        loaded = self._load_once(project, serving, key)
                if loaded is None or self._checked(project).version != serving.version:
                    continue  # it failed (now marked), or a newer version was promoted meanwhile
            with self._lock:
                if key not in self._loaded:  # let go meanwhile by a request on a newer version
                    continue
                self._serve(project, key)
                return (serving.version, *self._loaded[key])

    def _load_once(self, project: int, serving: Serving, key: tuple[str, str]):
        """The predictor of ``key``, loaded, kept and served to ``project`` (so no other project's
        switch lets it go before it is used); None where it cannot be loaded (marked unusable)."""
        try:
            loaded = (self._load(serving.path), threading.Lock())
        except Exception:  # any load failure: this version is not servable in this process for now
            log.exception("project %s: version %s cannot be loaded", project, serving.version)
            owner = None if serving.version.startswith(STARTER_PREFIX) else project  # one starter for all
            with self._lock:
                self._unusable.setdefault(owner, {})[serving.version] = time.monotonic()
            return None
        with self._lock:
            self._loaded[key] = loaded
            self._serve(project, key)
        return loaded

    def _serve(self, project: int, key: tuple[str, str]) -> None:
        """(Under ``_lock``) serve ``key`` to ``project``, letting go of what no project serves any more."""
        if self._served.get(project) != key:
            self._served[project] = key
            log.info("project %s: serving model version %s", project, key[0])
            self._let_go_of_unserved()

    def _let_go_of_unserved(self) -> None:
        """Drop the predictors no project is served by any more (its old versions)."""
        served = set(self._served.values())
        for key in [k for k in self._loaded if k not in served]:
            del self._loaded[key]

    def _load(self, path):
        from model.predict import Predictor

        s = self.services.settings
        return Predictor(path, device=s.device, bf16=s.bf16_choice, score_threshold=LOW_SCORE,
                         max_boxes=max(s.max_boxes, 20), box_voting_iou=s.box_voting,
                         category_reading=s.category_reading, malignancy_reading=s.malignancy_reading,
                         proposals=s.proposals)


def emitted(detection: Detection, labels: LabelMap, threshold: float, max_boxes: int,
            show: str = "threshold") -> list[Box]:
    """The boxes the annotator will see: displayed under ``show``, each with a label in the config."""
    boxes: list[Box] = []
    for box in displayed(detection, threshold, show):
        if len(boxes) >= max_boxes:
            break
        if labels.label_for(box.category) is None:  # never emit a label the config does not have
            log.warning("no label in the project's config for BI-RADS %s: box dropped", box.category)
            continue
        boxes.append(box)
    return boxes


def regions(detection: Detection, labels: LabelMap, threshold: float, max_boxes: int,
            show: str = "threshold") -> list[dict]:
    """The ``emitted`` boxes as Label Studio regions."""
    return as_regions(detection, emitted(detection, labels, threshold, max_boxes, show), labels)


def as_regions(detection: Detection, boxes: list[Box], labels: LabelMap) -> list[dict]:
    """``boxes`` of ``detection``, each with its label in the config, as Label Studio regions."""
    return [to_region(box, detection.width, detection.height, labels.label_for(box.category), labels.from_name,
                      labels.to_name, f"birads-{number}", detection.malignancy_of(box))
            for number, box in enumerate(boxes)]


def prediction(detection: Detection, labels: LabelMap, settings: Settings, version: str) -> dict:
    """One task's answer: its regions and the task score, the confidence in what is shown."""
    boxes = emitted(detection, labels, settings.score_threshold, settings.max_boxes, settings.show_boxes)
    return {"result": as_regions(detection, boxes, labels),
            "score": round(detection.confidence(settings.score_threshold, boxes), 4), "model_version": version}


def _deferred(tasks: list[dict], why: str, version: str) -> list[dict]:
    """Entries for tasks this request does not reach (``why``): without "result", Label Studio
    stores nothing for them and asks for them again (its next "Retrieve predictions" sends only those)."""
    return [{"error": f"task {task.get('id')}: {why}", "model_version": version} for task in tasks]


class RecentFailures:
    """The tasks whose image failed within KEEP_S, per project: a request reads them after the
    others. Label Studio sends a failed task first again (it stored nothing for it), so images that
    keep failing slowly (a host that drops packets) would spend every request's time budget before
    the rest were reached."""

    KEEP_S = 600.0

    def __init__(self) -> None:
        self._failed: dict[tuple[int, object], float] = {}  # (project, task id) -> when (monotonic)
        self._lock = threading.Lock()

    def order(self, project: int, tasks: list[dict]) -> list[int]:
        """The tasks' indices, those that failed lately last (each group in the order given)."""
        since = time.monotonic() - self.KEEP_S
        with self._lock:
            self._failed = {key: when for key, when in self._failed.items() if when > since}
            late = set(self._failed)
        return sorted(range(len(tasks)), key=lambda i: (project, tasks[i].get("id")) in late)

    def note(self, project: int, task: dict, failed: bool) -> None:
        with self._lock:
            if failed:
                self._failed[(project, task.get("id"))] = time.monotonic()
            else:
                self._failed.pop((project, task.get("id")), None)


class BiradsDetector(LabelStudioMLBase):
    """Pre-annotates breast ultrasound tasks with BI-RADS boxes."""

    def __init__(self, project: int, label_config: str, services: Services, models: ModelCache,
                 failures: RecentFailures | None = None) -> None:
        self.labels = parse_label_config(label_config)  # LabelConfigError before anything else
        super().__init__(label_config=label_config)
        self.project = project
        self.services = services
        self.models = models
        self.recent_failures = failures or RecentFailures()

    @property
    def model_version(self) -> str:
        return self.models.version(self.project)

    def _answers(self, batch: list[dict], images: list, predictor, lock: threading.Lock, version: str,
                 failures: list[tuple[str, int]]) -> list[dict]:
        """Each task's answer: its prediction, or where its image failed an entry without "result"
        (Label Studio stores nothing for it and asks again later), the failure noted in ``failures``."""
        readable = [image for image in images if not isinstance(image, ImageError)]
        with lock:
            detections = iter(predictor(readable, batch_size=self.services.settings.predict_batch) if readable else ())
        answers = []
        for task, image in zip(batch, images):
            self.recent_failures.note(self.project, task, failed=isinstance(image, ImageError))
            if isinstance(image, ImageError):
                failures.append((f"task {task.get('id')}: {image}", image.status))
                answers.append({"error": failures[-1][0], "model_version": version})
            else:
                answers.append(prediction(next(detections), self.labels, self.services.settings, version))
        return answers

    def _image_references(self, tasks: list[dict]) -> list[str | ImageError]:
        """Each task's image reference, or the error that costs that task alone."""
        references = []
        for task in tasks:
            data = task.get("data")
            if isinstance(data, dict) and data.get(self.labels.data_key):
                references.append(through_label_studio(data[self.labels.data_key], task.get("id")))
            else:
                references.append(ImageError(f"no '{self.labels.data_key}' image field in its data", 400))
        return references

    def _fetch_deadline(self, started: float, inference: float) -> float | None:
        """When a batch's downloads must be done: what the budget leaves once the batch's inference
        (as long as the last one's) is set aside, so that one slow image cannot push the answer past
        Label Studio's limit (it would store nothing). At least MIN_FETCH_SECONDS: each batch started tries."""
        budget = self.services.settings.predict_time_budget
        if not budget:
            return None
        now = time.monotonic()
        return now + max(MIN_FETCH_SECONDS, budget - (now - started) - inference)

    def predict(self, tasks: list[dict], started: float | None = None, **kwargs) -> list[dict]:
        """``started``: when the request arrived (time.monotonic), which PREDICT_TIME_BUDGET counts from."""
        s = self.services.settings
        started = time.monotonic() if started is None else started  # loading a version counts too
        version, predictor, lock = self.models.get(self.project)
        tasks, beyond = tasks[:s.max_tasks], tasks[s.max_tasks:]  # Label Studio sends the rest next time
        if beyond:
            log.warning("%d tasks in one request, MAX_TASKS is %d: the last %d are answered without a result, "
                        "and Label Studio asks for them again", len(tasks) + len(beyond), s.max_tasks, len(beyond))
        if predictor is None:  # no model trained yet: no boxes, never random ones
            return [{"result": [], "score": 0.0, "model_version": version} for _ in tasks + beyond]
        order = self.recent_failures.order(self.project, tasks)
        answered = self._predict_in_turn([tasks[i] for i in order], started, version, predictor, lock)
        position = {task: place for place, task in enumerate(order)}
        results = [answered[position[i]] for i in range(len(tasks))]  # in the order Label Studio sent
        return results + _deferred(beyond, f"beyond MAX_TASKS={s.max_tasks} in one request", version)

    def _predict_in_turn(self, tasks: list[dict], started: float, version: str, predictor,
                         lock: threading.Lock) -> list[dict]:
        """Each task's answer, a batch at a time while PREDICT_TIME_BUDGET allows."""
        s = self.services.settings
        references = self._image_references(tasks)
        results, failures = [], []
        last_batch = last_inference = 0.0
        for start in range(0, len(tasks), s.predict_batch):  # decode a batch at a time: bounded memory
            batch_started = time.monotonic()
            # a batch is started only if one as long as the last still ends within the budget; the
            # first always is, so that each "Retrieve predictions" stores something
            if start and s.predict_time_budget and batch_started - started + last_batch > s.predict_time_budget:
                results += _deferred(tasks[start:], f"not reached within PREDICT_TIME_BUDGET="
                                                    f"{s.predict_time_budget:g} s", version)
                log.warning("%d of %d tasks not reached within PREDICT_TIME_BUDGET=%g s; Label Studio asks for "
                            "them again", len(tasks) - start, len(tasks), s.predict_time_budget)
                break
            images = self.services.fetcher.fetch_all(references[start:start + s.predict_batch],
                                                     deadline=self._fetch_deadline(started, last_inference))
            fetched = time.monotonic()
            results += self._answers(tasks[start:start + s.predict_batch], images, predictor, lock, version, failures)
            del images  # before the next batch is decoded: bounded memory
            last_batch, last_inference = time.monotonic() - batch_started, time.monotonic() - fetched
        if len(failures) == len(tasks):  # nothing to store: the request itself failed
            raise RequestError("; ".join(message for message, _ in failures), max(status for _, status in failures))
        for message, _ in failures:
            log.warning("%s: no prediction for it; the other tasks' are answered", message)
        return results
