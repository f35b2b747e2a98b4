"""A trained model is a self-contained directory; the predictor needs nothing else.

    model_final.pth   weights only (no optimizer state)
    config.yaml       the exact detectron2 config it was trained with
    model.json        class names, parent version, training data summary, settings, metrics
    metrics.json      detectron2's per-iteration training log (losses, lr, time)
    box_classifier/   optional: weights.pth + classifier.json (model.box_classifier)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from model.io import DataError, write_atomic

WEIGHTS = "model_final.pth"
CONFIG = "config.yaml"
META = "model.json"
MODEL_FILES = (WEIGHTS, CONFIG, META)  # what makes a folder a model directory
TRAIN_LOG = "metrics.json"
BOX_CLASSIFIER = "box_classifier"
BOX_CLASSIFIER_WEIGHTS = f"{BOX_CLASSIFIER}/weights.pth"
BOX_CLASSIFIER_META = f"{BOX_CLASSIFIER}/classifier.json"
FORMAT = 1
# Names inside model_final.pth: the box head's layers and the box predictor's two outputs
BOX_HEAD = "roi_heads.box_head"
CLASS_SCORES = "roi_heads.box_predictor.cls_score"
BOX_DELTAS = "roi_heads.box_predictor.bbox_pred"


@dataclass
class ModelInfo:
    classes: list[str]
    created_at: str
    parent: str | None = None
    data: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    format: int = FORMAT

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=1)


def is_model_dir(path: str | Path) -> bool:
    return all((Path(path) / name).is_file() for name in MODEL_FILES)


def read_info(model_dir: str | Path) -> ModelInfo:
    model_dir = Path(model_dir)
    missing = [n for n in MODEL_FILES if not (model_dir / n).is_file()]
    if missing:
        raise DataError(f"{model_dir}: not a model directory (missing {', '.join(missing)})")
    try:
        data = json.loads((model_dir / META).read_text())
        return ModelInfo(**data)
    except (json.JSONDecodeError, TypeError) as exc:
        raise DataError(f"{model_dir / META}: malformed ({exc})") from None


def update_metrics(model_dir: str | Path, metrics: dict) -> None:
    """Record evaluation results in the model's own metadata."""
    info = read_info(model_dir)
    info.metrics.update(metrics)
    write_atomic(Path(model_dir) / META, info.to_json())
