"""Where Label Studio meets the model: the LabelStudioMLBase subclass (predict).

predict: task images -> the served model version -> boxes as Label Studio regions, labelled only
with labels of the project's config. Training is not LabelStudioMLBase.fit's business here: a
webhook only asks backend.jobs for a (coalesced) job, which reads everything from Label Studio.

Task score (``score`` of each prediction) is ``Detection.confidence``: the model's confidence in
the whole pre-annotation. Sorting Label Studio's Data Manager by prediction score, ascending,
puts the tasks the model is least sure of first.
"""

from __future__ import annotations

import logging
import threading

from label_studio_ml.model import LabelStudioMLBase

from backend.images import ImageError
from backend.labels import LabelMap, parse_label_config
from backend.services import Services
from model.evaluation.evaluate import LOW_SCORE, displayed
from model.records import Detection
from model.regions import to_region
from model.registry import Serving

log = logging.getLogger(__name__)
UNTRAINED = "untrained"


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
    """One loaded predictor per project and process; reloaded when the served version changes.

    A version that fails to load is remembered as unusable here, and the registry's fallback
    (the last good version) is served instead, as for a version that fails its checksums."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._loaded: dict[int, tuple[str, object, threading.Lock]] = {}
        self._unusable: dict[int, frozenset[str]] = {}
        self._reported: set[tuple] = set()
        self._lock = threading.Lock()

    def serving(self, project: int) -> Serving:
        serving = self.services.serving(project, self._unusable.get(project, frozenset()))
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
        while True:  # each failed load marks one more version unusable: this ends
            serving = self._checked(project)
            if serving.version is None:
                return UNTRAINED, None, None
            with self._lock:
                cached = self._loaded.get(project)
                if cached is not None and cached[0] == serving.version:
                    return cached
                try:
                    predictor = self._load(serving.path)
                except Exception:  # any load failure: this version is not servable in this process
                    log.exception("project %s: version %s cannot be loaded", project, serving.version)
                    self._unusable[project] = self._unusable.get(project, frozenset()) | {serving.version}
                    continue
                cached = self._loaded[project] = (serving.version, predictor, threading.Lock())
                log.info("project %s: serving model version %s", project, serving.version)
                return cached

    def _load(self, path):
        from model.predict import Predictor

        s = self.services.settings
        return Predictor(path, device=s.device, bf16=s.bf16_choice, score_threshold=LOW_SCORE,
                         max_boxes=max(s.max_boxes, 20), box_voting_iou=s.box_voting,
                         category_reading=s.category_reading, malignancy_reading=s.malignancy_reading)


def regions(detection: Detection, labels: LabelMap, threshold: float, max_boxes: int,
            show: str = "threshold") -> list[dict]:
    result = []
    for box in displayed(detection, threshold, show):
        if len(result) >= max_boxes:
            break
        label = labels.label_for(box.category)
        if label is None:  # never emit a label the config does not have
            log.warning("no label in the project's config for BI-RADS %s: box dropped", box.category)
            continue
        result.append(to_region(box, detection.width, detection.height, label, labels.from_name,
                                labels.to_name, f"birads-{len(result)}", detection.malignancy_of(box)))
    return result


class BiradsDetector(LabelStudioMLBase):
    """Pre-annotates breast ultrasound tasks with BI-RADS boxes."""

    def __init__(self, project: int, label_config: str, services: Services, models: ModelCache) -> None:
        self.labels = parse_label_config(label_config)  # LabelConfigError before anything else
        super().__init__(label_config=label_config)
        self.project = project
        self.services = services
        self.models = models

    @property
    def model_version(self) -> str:
        return self.models.version(self.project)

    def _image_references(self, tasks: list[dict]) -> list[str]:
        references = []
        for number, task in enumerate(tasks):
            data = task.get("data") if isinstance(task, dict) else None
            name = f"task {task.get('id', number) if isinstance(task, dict) else number}"
            if not isinstance(data, dict) or not data.get(self.labels.data_key):
                raise RequestError(f"{name}: no '{self.labels.data_key}' image field in its data")
            references.append(data[self.labels.data_key])
        return references

    def predict(self, tasks: list[dict], **kwargs) -> list[dict]:
        references = self._image_references(tasks)
        version, predictor, lock = self.models.get(self.project)
        if predictor is None:  # no model trained yet: no boxes, never random ones
            return [{"result": [], "score": 0.0, "model_version": version} for _ in tasks]
        s = self.services.settings
        results = []
        for start in range(0, len(tasks), s.predict_batch):  # decode a batch at a time: bounded memory
            batch = tasks[start:start + s.predict_batch]
            images = self.services.fetcher.fetch_all(references[start:start + s.predict_batch])
            failures = [(t.get("id"), img) for t, img in zip(batch, images) if isinstance(img, ImageError)]
            if failures:
                status = max(error.status for _, error in failures)
                raise RequestError("; ".join(f"task {tid}: {error}" for tid, error in failures), status)
            with lock:
                detections = predictor(images, batch_size=s.predict_batch)
            del images
            results += [{"result": regions(d, self.labels, s.score_threshold, s.max_boxes, s.show_boxes),
                         "score": round(d.confidence(s.score_threshold), 4), "model_version": version}
                        for d in detections]
        return results
