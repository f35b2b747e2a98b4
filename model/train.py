"""Training: a DefaultTrainer subclass (detectron2's way: override the builders) and ``train()``.

``train(records, out, settings)`` writes a self-contained model directory (``model.modeldir``).
Checkpoints go to ``<out>.work/`` so an interrupted run resumes; ``out`` appears only when the run
completes, so a failed or killed run never leaves a half-written model.
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from detectron2.data import DatasetMapper, build_detection_train_loader, detection_utils
from detectron2.data import transforms as T
from detectron2.data.samplers import RepeatFactorTrainingSampler, TrainingSampler
from detectron2.engine import DefaultTrainer, HookBase, SimpleTrainer
from detectron2.engine.hooks import EvalHook
from detectron2.structures import BoxMode
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import CommonMetricPrinter, JSONWriter
from detectron2.utils.logger import setup_logger

from model import box_classifier, class_rows, fine_tuning, modeldir, taxonomy
from model.augment import training_augmentations
from model.config import TRUNK_FILE, TrainSettings, build_config, use_bf16
from model.datasets.export import summary
from model.io import DataError, StagedDirectory, read_image
from model.records import ImageRecord
from model.roi_pooling import pool_boxes

log = logging.getLogger(__name__)
Progress = Callable[[dict], None]


def to_detectron2(records: list[ImageRecord], classes: list[str]) -> list[dict]:
    """detectron2 dataset dicts; categories rolled up onto ``classes`` (4A -> 4 if needed)."""
    index = {name: number for number, name in enumerate(classes)}
    dicts = []
    for number, record in enumerate(records):
        annotations = [{"bbox": [b.x0, b.y0, b.x1, b.y1], "bbox_mode": BoxMode.XYXY_ABS,
                        "category_id": index[taxonomy.roll_up(b.category, classes)]}
                       for b in record.boxes]
        dicts.append({"file_name": record.path, "image_id": number, "width": record.width,
                      "height": record.height, "annotations": annotations})
    return dicts


class Bf16Trainer(SimpleTrainer):
    """SimpleTrainer whose forward pass runs under bfloat16 autocast (CPU or GPU).

    detectron2's AMPTrainer is CUDA fp16 only (it asserts CUDA and needs a GradScaler); bf16 has
    fp32's range, so no loss scaling is needed.
    """

    def run_step(self) -> None:
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        device = "cuda" if next(self.model.parameters()).is_cuda else "cpu"
        with torch.autocast(device, dtype=torch.bfloat16):
            loss_dict = self.model(data)
        losses = sum(loss.float() for loss in loss_dict.values())
        self.optimizer.zero_grad()
        losses.backward()
        self._write_metrics(loss_dict, data_time)
        self.optimizer.step()


class ProgressHook(HookBase):
    """Reports iteration, loss and ETA to a callback (console, RQ job meta) every few steps."""

    def __init__(self, callback: Progress, period: int) -> None:
        self.callback = callback
        self.period = period

    def before_train(self) -> None:
        self.last_time = time.perf_counter()
        self.last_iter = self.trainer.iter

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if done % self.period and done != self.trainer.max_iter:
            return
        # Rate over the last period, not since the start: a machine that was busy for a while
        # (another job, a test run) would otherwise skew the ETA for the rest of the run.
        now = time.perf_counter()
        per_iter = (now - self.last_time) / max(1, done - self.last_iter)
        self.last_time, self.last_iter = now, done
        storage = self.trainer.storage
        loss = storage.history("total_loss").median(self.period) if "total_loss" in storage.histories() else None
        self.callback({"stage": "training", "iteration": done, "max_iter": self.trainer.max_iter,
                       "seconds_per_iter": round(per_iter, 3),
                       "eta_seconds": round(per_iter * (self.trainer.max_iter - done)),
                       "loss": None if loss is None else round(float(loss), 4)})


class PixelsAsPredicted(DatasetMapper):
    """detectron2's training mapper with the pixels read as prediction reads them
    (``model.io.read_image``): detectron2's own reader clips 16-bit grey at 255, where the
    predictor, the trunk and the box classifier stretch it onto 0-255. 8-bit images read alike."""

    def __call__(self, dataset_dict: dict) -> dict:
        record = copy.deepcopy(dataset_dict)
        image = read_image(record["file_name"])
        image = image[:, :, ::-1] if self.image_format == "BGR" else image
        detection_utils.check_image_size(record, image)
        augmented = T.AugInput(np.ascontiguousarray(image))
        transforms = self.augmentations(augmented)
        record["image"] = torch.as_tensor(np.ascontiguousarray(augmented.image.transpose(2, 0, 1)))
        self._transform_annotations(record, transforms, augmented.image.shape[:2])
        return record


class BiradsTrainer(DefaultTrainer):
    """DefaultTrainer fed from our records, with the paper's augmentation and optional bf16."""

    def __init__(self, cfg, dataset: list[dict], settings: TrainSettings,
                 progress: Progress | None = None) -> None:
        self.dataset = dataset
        self.settings = replace(settings, bf16=use_bf16(settings.bf16, cfg.MODEL.DEVICE))
        self.progress = progress
        super().__init__(cfg)
        if self.settings.bf16:
            self.model.to(memory_format=torch.channels_last)
            self._trainer = Bf16Trainer(self.model, self.data_loader, self.optimizer)

    def build_model(self, cfg):
        """detectron2's model, the parts ``settings.frozen`` names left out of the optimizer."""
        model = super().build_model(cfg)
        freeze(model, self.settings.frozen)
        pool_boxes(model, exact_corners=self.settings.roi_align_fp32)  # its backward on every core
        return model

    def build_train_loader(self, cfg):
        mapper = PixelsAsPredicted(cfg, is_train=True,
                               augmentations=training_augmentations(
            self.settings, cfg.INPUT.MIN_SIZE_TRAIN[0], cfg.INPUT.MAX_SIZE_TRAIN))
        if self.settings.class_balanced:
            factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
                self.dataset, cfg.DATALOADER.REPEAT_THRESHOLD)
            sampler = RepeatFactorTrainingSampler(factors, seed=cfg.SEED)
        else:
            sampler = TrainingSampler(len(self.dataset), seed=cfg.SEED)
        return build_detection_train_loader(
            dataset=self.dataset, mapper=mapper, sampler=sampler,
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH, num_workers=cfg.DATALOADER.NUM_WORKERS)

    def build_writers(self):
        # No TensorBoard writer: tensorboard is not a dependency; metrics.json has the same data.
        return [CommonMetricPrinter(self.max_iter),
                JSONWriter(str(Path(self.cfg.OUTPUT_DIR) / modeldir.TRAIN_LOG))]

    def build_hooks(self):
        # Evaluation is ours (model.evaluate), run on the finished model, not inside training.
        hooks = [h for h in super().build_hooks() if not isinstance(h, EvalHook)]
        if self.progress is not None:
            hooks.append(ProgressHook(self.progress, self.settings.log_period))
        return hooks


def freeze(model: torch.nn.Module, prefixes: tuple[str, ...]) -> int:
    """Leave every parameter whose name starts with one of ``prefixes`` as loaded (detectron2's
    optimizer skips those that need no gradient). Returns how many tensors; a prefix that names
    none is an error, not a silent no-op."""
    frozen = 0
    for prefix in prefixes:
        matched = [p for name, p in model.named_parameters() if name.startswith(prefix)]
        if not matched:
            raise DataError(f"nothing to freeze: no parameter of this model is named {prefix}*")
        for parameter in matched:
            parameter.requires_grad_(False)
        frozen += len(matched)
    if prefixes:
        log.info("held as loaded: %d parameter tensors (%s)", frozen, ", ".join(prefixes))
    return frozen


class _StepClock(HookBase):
    """When each step ended, and how long it waited for its batch."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.data_times: list[float] = []

    def after_step(self) -> None:
        self.times.append(time.perf_counter())
        self.data_times.append(self.trainer.storage.history("data_time").latest())


def overlapped_step_seconds(step_seconds: list[float], data_seconds: list[float], workers: int) -> float:
    """Mean step time of a run with ``workers`` loader processes, from steps timed with in-process
    loading: the workers prepare batches while the model computes, so a step costs the longer of
    its compute and its share of the loading (with none, the sum)."""
    per_step = [max(step - data, data / workers) if workers else step
                for step, data in zip(step_seconds, data_seconds)]
    return sum(per_step) / len(per_step)


def _trainable(records: list[ImageRecord], settings: TrainSettings) -> list[ImageRecord]:
    """The images a run trains on: the second model's leaves out every image with a BI-RADS 4."""
    if settings.without_birads_4:
        records = [r for r in records if not any(_is_four(b.category) for b in r.boxes)]
    if not records:
        raise DataError("no training images" + (" without BI-RADS 4" if settings.without_birads_4 else ""))
    return records


def seconds_per_iteration(records: list[ImageRecord], settings: TrainSettings, steps: int = 4) -> float:
    """This machine's speed for ``settings``: a few real iterations on ``records`` (the first,
    which warms up the allocator and kernels, not counted). A quick probe before a long run.

    The probe loads its batches in-process (a loader worker would outlive it). On a CPU loading is
    ~1 % of a step; on a GPU it was most of it (0.45 s measured against 0.14 s per real iteration
    with 8 workers, docs/results.md), hence the overlap with ``settings.num_workers``."""
    import tempfile

    records = _trainable(records, settings)
    probe = replace(settings, max_iter=max(2, steps), checkpoint_period=10**9, warmup_iters=1, num_workers=0)
    classes = training_classes(records, settings.without_birads_4, settings.label_set)
    with tempfile.TemporaryDirectory(prefix="birads-probe-") as work:
        cfg = build_config(probe, classes, len(records), work)
        trainer = BiradsTrainer(cfg, to_detectron2(records, classes), probe, progress=lambda info: None)
        clock = _StepClock()
        trainer.register_hooks([clock])
        trainer.resume_or_load(resume=False)
        trainer.train()
    step_seconds = [end - start for start, end in zip(clock.times, clock.times[1:])]
    return overlapped_step_seconds(step_seconds, clock.data_times[1:], settings.num_workers)


def _class_scores_learn_where_classes_change(settings: TrainSettings, classes: list[str]) -> TrainSettings:
    """A fine-tune that splits a parent class (4A/4B/4C from 4) must learn its class scores: held
    as loaded, the subcategories copied from one parent row would stay one forever. Dropping or
    merging classes (the second model, 4 from 4A/4B/4C) copies no row twice: the hold stands."""
    held = [p for p in settings.frozen if modeldir.CLASS_SCORES.startswith(p.rstrip("."))]
    if not held or not modeldir.is_model_dir(settings.weights):
        return settings
    sources = [tuple(parents) for parents in class_rows.from_parent(settings.weights, classes).values()]
    if len(sources) == len(set(sources)):
        return settings
    log.warning("classes %s differ from the parent's: its class scores learn (not held: %s)", classes, held)
    return replace(settings, frozen=tuple(p for p in settings.frozen if p not in held))


def _inherit_class_rows(trainer: BiradsTrainer, weights: str, classes: list[str]) -> dict[str, list[str]]:
    """Fine-tuning a model directory onto other classes: the box predictor's rows from the parent's
    (model.class_rows). On a resumed run the checkpoint already holds them; only the record is made."""
    if not weights or not modeldir.is_model_dir(weights):
        return {}
    if trainer.start_iter > 0:
        return class_rows.from_parent(weights, classes)
    inherited = class_rows.inherit(trainer.model, weights, classes)
    if inherited:
        log.info("box predictor rows from the parent's classes: %s", inherited)
    return inherited


CARRIED, RETRAINED = "carried from the parent", "retrained"  # model.json's training.box_classifier


def _classifier_plan(records: list[ImageRecord], settings: TrainSettings, classes: list[str]) -> str | None:
    """What a run does with its parent's box classifier: None (it has none), ``CARRIED`` (as it
    is: fewer of the project's own lesions than ``classifier_min_lesions``, and the same classes),
    or ``RETRAINED`` (fine-tuned, or afresh where the classes differ: ``train_box_classifier``)."""
    if not settings.weights or not box_classifier.has_classifier(settings.weights):
        return None
    own = fine_tuning.own_lesions(records)
    if own < settings.classifier_min_lesions and box_classifier.names_exactly(settings.weights, classes):
        log.info("box classifier carried from the parent: %d of the project's own lesions, fewer than %d",
                 own, settings.classifier_min_lesions)
        return CARRIED
    return RETRAINED


def training_classes(records: list[ImageRecord], without_birads_4: bool = False,
                     label_set: tuple[str, ...] = ()) -> list[str]:
    """The detector classes the boxes of ``records`` need (4A/4B/4C or plain 4, never 1), or
    ``label_set``'s where it names them all: a project whose config names 4A/4B/4C and no plain 4
    needs a model that says 4A/4B/4C before its experts have drawn one (a "4" would be dropped)."""
    categories = [b.category for r in records for b in r.boxes]
    if not categories:
        raise DataError("no lesion boxes in the training images: nothing to learn")
    chosen = taxonomy.label_set_for(categories)
    if label_set:
        if all(taxonomy.names(c, label_set) for c in categories):  # a 4A into plain 4's set: rolled up
            chosen = tuple(label_set)
        else:
            log.warning("boxes of categories the label set %s cannot name: classes %s from the boxes",
                        list(label_set), list(chosen))
    classes = taxonomy.detector_classes(chosen)
    return [c for c in classes if not (without_birads_4 and _is_four(c))]


def _is_four(category: str) -> bool:
    return int(taxonomy.rank(category)) == 4


def _log_progress(info: dict) -> None:
    log.info("iter %d/%d  loss %s  %.2f s/iter  ETA %ds", info["iteration"], info["max_iter"],
             info["loss"], info["seconds_per_iter"], info["eta_seconds"])


def _epochs_as_iterations(progress: Progress) -> Progress:
    """The box classifier's epochs reported as the detector's iterations are (one job display)."""
    def report(row: dict) -> None:
        per_epoch = row["elapsed_seconds"] / row["epoch"]
        progress({"stage": "box classifier", "iteration": row["epoch"], "max_iter": row["epochs"],
                  "loss": row["loss"], "eta_seconds": round(per_epoch * (row["epochs"] - row["epoch"]))})
    return report


def work_dir(out: str | Path) -> Path:
    """Where ``train(records, out)`` keeps its checkpoints until ``out`` is written."""
    out = Path(out)
    return out.with_name(f".{out.name}.work")


def remove_abandoned_work(folder: str | Path, older_than_s: float) -> list[Path]:
    """Remove the hidden folders in ``folder`` (a run's checkpoints, ``.NAME.work``; a model
    directory being written, ``.NAME.XXXX``, or replaced, ``.NAME.old``: ``StagedDirectory``) with
    nothing written for ``older_than_s`` seconds: runs killed before they could clean up, when no
    run may last that long."""
    removed = []
    for work in Path(folder).glob(".*"):
        try:
            newest = max((p.stat().st_mtime for p in work.rglob("*")), default=work.stat().st_mtime)
        except OSError:  # its run finished and removed it while we looked
            continue
        if work.is_dir() and time.time() - newest > older_than_s:
            shutil.rmtree(work, ignore_errors=True)
            removed.append(work)
    return removed


def trunk_misfits(trunk: dict, state: dict) -> list[str]:
    """The pretrained trunk's tensors this detector has no place for, or one of another shape
    (detectron2's checkpointer skips them with a log line: the detector would train from a random
    or half-random trunk, and only weak figures would say so)."""
    return [name for name, tensor in trunk.items()
            if name not in state or tuple(state[name].shape) != tuple(tensor.shape)]


def _check_trunk_fits(path: str, state: dict) -> None:
    trunk = torch.load(path, map_location="cpu", weights_only=True)["model"]
    misfits = trunk_misfits(trunk, state)
    if misfits:
        raise DataError(f"{path}: {len(misfits)} of the trunk's {len(trunk)} tensors do not fit this detector "
                        f"(first: {misfits[0]}): its backbone is not the one the trunk was pretrained as "
                        "(an --extra MODEL.RESNETS.* or another base config?)")


def train(records: list[ImageRecord], out: str | Path, settings: TrainSettings | None = None,
          resume: bool = False, progress: Progress | None = None) -> Path:
    """Train on ``records`` and write the model directory ``out``. Returns ``out``."""
    settings = settings or TrainSettings()
    records = _trainable(records, settings)
    out = Path(out)
    StagedDirectory(out).check()
    work = work_dir(out)
    classes = training_classes(records, settings.without_birads_4, settings.label_set)
    settings = _class_scores_learn_where_classes_change(settings, classes)
    cfg = build_config(settings, classes, len(records), work)  # a bad setting fails before any folder
    if work.exists() and not resume:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    setup_logger(str(work), name="detectron2")
    seed_all_rng(settings.seed)
    log.info("training %d images (%s), classes %s, %d iterations, weights %r", len(records),
             cfg.MODEL.DEVICE, classes, cfg.SOLVER.MAX_ITER, cfg.MODEL.WEIGHTS or "none")
    trainer = BiradsTrainer(cfg, to_detectron2(records, classes), settings,
                            progress or _log_progress)
    trainer.resume_or_load(resume=resume)
    if not resume and Path(cfg.MODEL.WEIGHTS).name == TRUNK_FILE:
        _check_trunk_fits(cfg.MODEL.WEIGHTS, trainer.model.state_dict())
    inherited = _inherit_class_rows(trainer, settings.weights, classes)
    classifier = _classifier_plan(records, settings, classes)
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    info = modeldir.ModelInfo(
        classes=classes, created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        parent=settings.weights or None, data=summary(records), settings=trainer.settings.to_dict(),
        training={"iterations": cfg.SOLVER.MAX_ITER, "wall_seconds": round(wall, 1),
                  "device": cfg.MODEL.DEVICE, "torch": torch.__version__,
                  **({"class_rows_from_parent": inherited} if inherited else {}),
                  **({"frozen": list(settings.frozen)} if settings.frozen else {}),
                  **({"box_classifier": classifier} if classifier else {})})
    with StagedDirectory(out) as staging:
        torch.save({"model": trainer.model.state_dict()}, staging / modeldir.WEIGHTS)
        (staging / modeldir.CONFIG).write_text(cfg.dump())
        (staging / modeldir.META).write_text(info.to_json())
        shutil.copy(work / modeldir.TRAIN_LOG, staging / modeldir.TRAIN_LOG)
        if classifier == CARRIED:
            box_classifier.carry(settings.weights, staging)
        elif classifier:
            # The categories learnt from the experts' corrections reach the classifier too.
            box_classifier.train_box_classifier(records, staging, classes, parent=settings.weights,
                                                progress=_epochs_as_iterations(progress) if progress else None)
    shutil.rmtree(work, ignore_errors=True)
    log.info("model written to %s (%.0f s)", out, wall)
    return out
