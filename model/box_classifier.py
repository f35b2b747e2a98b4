"""A second opinion on each detected box's BI-RADS category: a small CNN on the box's crop.

A Faster R-CNN trained from random weights on ~1,000 images finds lesions better than it names
them: its box head sees each lesion once per epoch, among hundreds of background proposals. A
ResNet-18 on lesion crops (1.5x context, 112 px) sees every lesion in every batch and trains 30
epochs in minutes on a CPU (docs/results.md). The predictor blends its category probabilities
with the detector's for every box (``blend``: the classifier's share); where the boxes are and
how confident the detector is of each stay the detector's. On the reference model it did not pay
(docs/results.md, discussion item 8): a lever for a project to measure on its own data. Its
pathology head gives each box a P(malignant) (``Detection.malignancy``), which ranked images
against pathology better than the categories did (item 13; ``--blend 0`` keeps the detector's
categories and adds only that). Trained with ``misplaced_share`` (background crops that miss a
lesion beside it), its P(lesion) can re-rank the detector's boxes (``rescore``, items 14 and 17).

It lives in the model directory as ``box_classifier/`` (weights + ``classifier.json``): the model
stays self-contained, and a fine-tuned version fine-tunes its parent's classifier too
(``model.train``).
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from model import modeldir, taxonomy
from model.config import resolve_device, use_bf16
from model.io import DataError, StagedDirectory
from model.pretrain import (
    BACKGROUND,
    CropClassifier,
    CropTraining,
    crop_opinions,
    crop_pixels,
    evaluate_crops,
    fit_crop_classifier,
    geometry_tensor,
)
from model.records import Box, ImageRecord

log = logging.getLogger(__name__)
DIRNAME = modeldir.BOX_CLASSIFIER
WEIGHTS = Path(modeldir.BOX_CLASSIFIER_WEIGHTS).name
META = Path(modeldir.BOX_CLASSIFIER_META).name
GREY_MEAN, GREY_STD = 120.0, 60.0  # ultrasound grey levels, roughly


@dataclass
class BoxClassifierSettings(CropTraining):
    blend: float = 0.5             # the classifier's share of each box's category probabilities
    rescore: float = 0.0           # its share of each box's rank: score^(1-w) * P(lesion)^w picks the
                                   # top box and orders AP; 0: the score ranks (docs/results.md, item 17)
    fine_tune_epochs: int = 10     # when a fine-tuned model version retrains its parent's classifier
    fine_tune_lr: float = 0.01
    geometry: bool = True          # its heads read each box's shape, size and depth (docs/results.md
                                   # item 43: +1.7 and +1.1 points over four folds from two seeds)


def build(n_categories: int, outline: bool = False, geometry: bool = False) -> CropClassifier:
    """ResNet-18 from random weights (each residual block starting as identity) + our heads (and
    the outline decoder, to train with one; heads that read each box's geometry, with ``geometry``)."""
    trunk = torchvision.models.resnet18(weights=None, zero_init_residual=True)
    trunk.fc = nn.Identity()
    return CropClassifier(trunk, 512, n_categories, [GREY_MEAN] * 3, [GREY_STD] * 3, outline, geometry)


def seeded(n_categories: int, settings: CropTraining, device: str) -> CropClassifier:
    """A fresh classifier whose random initial weights come from ``settings.seed`` (as pretrain's),
    not from whatever the global generator drew before: two arms start from the same weights."""
    torch.manual_seed(settings.seed)
    return build(n_categories, settings.outline_loss > 0, settings.geometry).to(
        device, memory_format=torch.channels_last)


def classifier_records(records: list[ImageRecord], classes: Sequence[str]) -> list[ImageRecord]:
    """The images whose every box has a category among ``classes`` (4A -> 4 rolled up); a model
    trained without BI-RADS 4 leaves those images out, as its detector did."""
    def fits(record: ImageRecord) -> bool:
        try:
            for box in record.boxes:
                taxonomy.roll_up(box.category, classes)
        except taxonomy.UnknownCategory:
            return False
        return True

    return [r for r in records if fits(r)]  # images without lesions give background crops


def train_box_classifier(records: list[ImageRecord], model_dir: str | Path, classes: Sequence[str],
                         settings: BoxClassifierSettings | None = None,
                         holdout: list[ImageRecord] | None = None, parent: str | Path | None = None,
                         progress: Callable[[dict], None] | None = None) -> Path:
    """Train a box classifier for a model of ``classes`` on ``records`` and write it into
    ``model_dir/box_classifier`` (atomically). With ``parent`` (a model directory holding a
    classifier of the same classes) it is fine-tuned from that one for ``fine_tune_epochs``, with
    the parent's settings unless ``settings`` are given."""
    target = Path(model_dir) / DIRNAME
    StagedDirectory(target).check()
    crop_classes = [*classes, BACKGROUND]
    records = classifier_records(records, classes)
    holdout = classifier_records(holdout, classes) if holdout else None
    if not records:
        raise DataError(f"no training boxes of categories {list(classes)} for the box classifier")
    device = resolve_device("auto")
    start = _classifier_dir(parent) if parent else None
    parent_meta = read_meta(start) if start else None
    settings = settings or (_settings(parent_meta) if parent_meta else BoxClassifierSettings())
    model = seeded(len(crop_classes), settings, device)
    schedule = settings
    # else afresh: another label set, or heads that read another input
    fine_tuned = (parent_meta is not None and parent_meta["classes"] == crop_classes
                  and _settings(parent_meta).geometry == settings.geometry)
    if fine_tuned:
        model.load_inference_state(torch.load(start / WEIGHTS, map_location="cpu", weights_only=True))
        schedule = BoxClassifierSettings(**asdict(settings) | {"epochs": settings.fine_tune_epochs,
                                                               "max_lr": settings.fine_tune_lr})
    # bf16 where this machine runs it; the meta keeps what was asked, for children trained elsewhere
    schedule = replace(schedule, bf16=use_bf16(schedule.bf16, device))
    started = time.perf_counter()
    history = fit_crop_classifier(model, records, crop_classes, schedule, device, progress)
    metrics = evaluate_crops(model, holdout, crop_classes, schedule, device) if holdout else {}
    meta = {"classes": crop_classes, "settings": asdict(settings),
            "fine_tuned_from": str(parent) if fine_tuned else None,
            "train_boxes": sum(len(r.boxes) for r in records), "history": history, "holdout": metrics,
            "wall_seconds": round(time.perf_counter() - started, 1)}
    with StagedDirectory(target) as staging:
        torch.save(model.inference_state(), staging / WEIGHTS)
        (staging / META).write_text(json.dumps(meta, indent=1))
    log.info("box classifier written to %s (%.0f s): %s", target, meta["wall_seconds"], metrics)
    return target


def names_exactly(model_dir: str | Path, classes: Sequence[str]) -> bool:
    """Whether the model directory's classifier names exactly ``classes`` (and the background)."""
    path = _classifier_dir(model_dir)
    return path is not None and read_meta(path)["classes"] == [*classes, BACKGROUND]


def carry(parent: str | Path, model_dir: str | Path) -> Path:
    """Copy ``parent``'s classifier into ``model_dir`` as it is (atomically): a version whose
    project has too few crops of its own to retrain it on (``model.fine_tuning``)."""
    source, target = _classifier_dir(parent), Path(model_dir) / DIRNAME
    if source is None:
        raise DataError(f"{parent}: no box classifier to carry")
    with StagedDirectory(target) as staging:
        for name in (WEIGHTS, META):
            shutil.copy2(source / name, staging / name)
    log.info("box classifier carried from %s into %s", source, target)
    return target


def _classifier_dir(model_dir: str | Path) -> Path | None:
    """The model directory's box classifier folder; None where it has none. Half of one (a file
    lost) is an error: served without it, the boxes would lose their P(malignant) unannounced."""
    path = Path(model_dir) / DIRNAME
    present = [(path / name).is_file() for name in (WEIGHTS, META)]
    if all(present):
        return path
    if any(present):
        missing = [name for name, there in zip((WEIGHTS, META), present) if not there]
        raise DataError(f"{path}: box classifier incomplete (missing {', '.join(missing)})")
    return None


# Settings added since classifiers were first saved, as the classifiers saved before them ran:
# their classifier.json lacks the key, and a later default must not change how they are read.
UNRECORDED = {"geometry": False, "lesion_shaped_background": False, "partial_share": 0.0}


def recorded_settings(saved: dict) -> dict:
    """A classifier's saved settings with those it predates filled in as it ran (``UNRECORDED``)."""
    return UNRECORDED | saved


def _settings(meta: dict) -> BoxClassifierSettings:
    known = {f.name for f in fields(BoxClassifierSettings)}
    return BoxClassifierSettings(**{k: v for k, v in recorded_settings(meta["settings"]).items() if k in known})


def has_classifier(model_dir: str | Path) -> bool:
    return _classifier_dir(model_dir) is not None


def read_meta(path: Path) -> dict:
    """A classifier folder's classifier.json (a DataError where it cannot be read)."""
    try:
        return json.loads((path / META).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path / META}: unreadable ({exc})") from None


def blend(detector: dict[str, float], classifier: dict[str, float], weight: float) -> dict[str, float]:
    """One box's class scores: the detector's and the classifier's category distributions (each
    normalised over the lesion categories) mixed with ``weight`` for the classifier, then scaled
    back to the detector's lesion mass (1 - background), so a box the detector doubts stays weak."""
    mass = sum(detector.values())
    if mass <= 0:
        return dict(detector)
    total = sum(classifier.get(c, 0.0) for c in detector) or 1.0
    return {c: mass * ((1 - weight) * p / mass + weight * classifier.get(c, 0.0) / total)
            for c, p in detector.items()}


class BoxClassifier:
    """Loaded once with the predictor; ``refine`` re-names each box from its crop."""

    def __init__(self, path: Path, classes: Sequence[str], device: str) -> None:
        meta = read_meta(path)
        try:
            self.settings = _settings(meta)
            self.crop_classes = list(meta["classes"])
        except (KeyError, TypeError) as exc:
            raise DataError(f"{path / META}: malformed ({exc!r})") from None
        missing = set(classes) - set(self.crop_classes)
        if missing:
            raise DataError(f"{path}: classifier of {self.crop_classes} cannot name {sorted(missing)}")
        self.device = device
        self.model = build(len(self.crop_classes), geometry=self.settings.geometry)
        try:
            state = torch.load(path / WEIGHTS, map_location="cpu", weights_only=True)
        except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as exc:  # empty, truncated, not torch's
            raise DataError(f"{path / WEIGHTS}: unreadable ({exc.__class__.__name__}: {exc})") from None
        try:
            self.model.load_inference_state(state)
        except (RuntimeError, KeyError, TypeError, AttributeError) as exc:  # another shape than META describes
            raise DataError(f"{path / WEIGHTS}: not the weights {META} describes ({exc})") from None
        self.model.to(device, memory_format=torch.channels_last).eval()

    @classmethod
    def of(cls, model_dir: str | Path, classes: Sequence[str], device: str) -> BoxClassifier | None:
        """The model directory's classifier, or None where it has none."""
        path = _classifier_dir(model_dir)
        return cls(path, classes, device) if path else None

    @torch.no_grad()
    def opinions(self, grey: np.ndarray, boxes: Sequence[Box]) -> tuple[list[dict[str, float]], list[float]]:
        """Per box: the classifier's softmax over its categories and background, and its
        pathology head's P(malignant) (under the caller's autocast, as the predictor's bf16 choice)."""
        if not boxes:
            return [], []
        crops = np.stack([crop_pixels(grey, (b.x0, b.y0, b.x1, b.y1), self.settings) for b in boxes])
        batch = torch.from_numpy(crops).to(self.device, memory_format=torch.channels_last)
        places = [(b.x0, b.y0, b.x1, b.y1) for b in boxes]
        geometry = geometry_tensor(places, [grey.shape] * len(places)) if self.settings.geometry else None
        probabilities, malignancy = crop_opinions(self.model, batch, self.settings.flip_at_test, geometry)
        rows = probabilities.cpu().tolist()
        return [dict(zip(self.crop_classes, row)) for row in rows], malignancy.cpu().tolist()

    def refine(self, grey: np.ndarray, boxes: Sequence[Box], class_scores: Sequence[dict[str, float]]
               ) -> tuple[list[Box], list[dict[str, float]], list[float], list[float]]:
        """Boxes re-named by the blended probabilities (category = the most probable), their blended
        class scores, each box's P(malignant) and, where ``rescore`` > 0, each box's rank: the
        geometric mix of its score with the classifier's P(lesion) = 1 - P(background) (else empty).
        The rank only orders the boxes (which is the top box, AP): each box keeps the detector's
        place and score, which decides what is shown at a threshold (replacing the score lifted
        weak boxes over the threshold, docs/results.md item 16; re-scoring with the blended
        category probability cost 0.05 of lesion AP50 on fold 4, item 8)."""
        categories, malignancy = self.opinions(grey, boxes)
        weight = self.settings.rescore
        named, mixes, ranks = [], [], []
        for box, scores, opinion in zip(boxes, class_scores, categories):
            mixed = blend(scores, opinion, self.settings.blend)
            named.append(replace(box, category=max(mixed, key=mixed.get)))
            mixes.append(mixed)
            if weight > 0:
                lesion = max(0.0, 1.0 - opinion.get(BACKGROUND, 0.0))
                ranks.append((box.score or 0.0) ** (1 - weight) * lesion ** weight)
        return named, mixes, malignancy, ranks
