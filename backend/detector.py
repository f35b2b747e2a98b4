"""Where Label Studio meets the model: the LabelStudioMLBase subclass (predict, fit).

predict: task images -> the served model version -> boxes as Label Studio regions, labelled only
with labels of the project's config. fit: enqueue a (coalesced) training job; never trains here.

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

log = logging.getLogger(__name__)
UNTRAINED = "untrained"
TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED", "START_TRAINING")


class RequestError(ValueError):
    """A bad request: answered with ``status`` and the message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ModelCache:
    """One loaded predictor per project and process; reloaded when the served version changes."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._loaded: dict[int, tuple[str, object, threading.Lock]] = {}
        self._lock = threading.Lock()

    def version(self, project: int) -> str:
        return self.services.served(project)[0] or UNTRAINED

    def get(self, project: int):
        """(version, predictor or None, lock serialising inference on it)."""
        version, path = self.services.served(project)
        if version is None:
            return UNTRAINED, None, None
        with self._lock:
            cached = self._loaded.get(project)
            if cached is None or cached[0] != version:
                from model.predict import Predictor

                s = self.services.settings
                predictor = Predictor(path, device=s.device, bf16=s.bf16_choice,
                                      score_threshold=LOW_SCORE, max_boxes=max(s.max_boxes, 20))
                cached = (version, predictor, threading.Lock())
                self._loaded[project] = cached
                log.info("project %s: serving model version %s", project, version)
            return cached


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
        w, h = detection.width, detection.height
        result.append({
            "id": f"birads-{len(result)}", "from_name": labels.from_name, "to_name": labels.to_name,
            "type": "rectanglelabels", "original_width": w, "original_height": h, "image_rotation": 0,
            "value": {"x": 100 * box.x0 / w, "y": 100 * box.y0 / h, "width": 100 * box.width / w,
                      "height": 100 * box.height / h, "rotation": 0, "rectanglelabels": [label]},
            "score": round(box.score, 4)})
    return result


class BiradsDetector(LabelStudioMLBase):
    """Pre-annotates breast ultrasound tasks with BI-RADS boxes; retrains through RQ."""

    def __init__(self, project: int, label_config: str, services: Services, models: ModelCache,
                 training_queue=None) -> None:
        self.labels = parse_label_config(label_config)  # LabelConfigError before anything else
        super().__init__(label_config=label_config)
        self.project = project
        self.services = services
        self.models = models
        self.training_queue = training_queue

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
        images = self.services.fetcher.fetch_all(references)
        failures = [(t.get("id"), img) for t, img in zip(tasks, images) if isinstance(img, ImageError)]
        if failures:
            status = max(error.status for _, error in failures)
            raise RequestError("; ".join(f"task {tid}: {error}" for tid, error in failures), status)
        s = self.services.settings
        with lock:
            detections = predictor(images, batch_size=s.predict_batch)
        return [{"result": regions(d, self.labels, s.score_threshold, s.max_boxes, s.show_boxes),
                 "score": round(d.confidence(s.score_threshold), 4), "model_version": version} for d in detections]

    def fit(self, event: str, data: dict | None = None, **kwargs) -> dict:
        """Queue training for this project (coalesced); START_TRAINING always trains."""
        if event not in TRAIN_EVENTS:
            return {"status": "ignored", "event": event}
        return self.training_queue.request(self.project, self.label_config, reason=event,
                                           force=event == "START_TRAINING")
