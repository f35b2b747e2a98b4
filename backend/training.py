"""The training job (runs on an RQ worker): Label Studio annotations -> a new model version.

1. read the project's label config and ALL its annotated tasks through the API (a webhook only
   says "something changed": nothing it carries is used); 2. the boxes each task stands for
   (model.regions: ground truth, the experts' consensus, "no lesion"); 3. download the images;
   4. hold out a share of the tasks; 5. fine-tune from the served version (or the starter model,
   or the configured initial weights), replaying REPLAY_DATA's images beside the project's;
   6. evaluate it and the served version on the held-out tasks; 7. register the version and
   switch "current" to it, unless it is worse than the served one on PROMOTE_METRIC: then it is
   kept and listed with the reason, not served. Until step 7 nothing served changes; a failure
   or a killed worker leaves the served version as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import NamedTuple

from PIL import Image
from redis.exceptions import RedisError
from rq import get_current_job

from backend.images import ImageError, through_label_studio
from backend.jobs import Holding, TrainingQueue
from backend.labels import parse_label_config
from backend.services import Services
from backend.settings import Settings
from model import fine_tuning, promotion, taxonomy
from model.config import TrainSettings
from model.records import ImageRecord
from model.regions import convert, in_pixels, task_patient
from model.registry import Registry, ReplacedMeanwhile, Serving

log = logging.getLogger(__name__)
FETCH_CHUNK = 32  # images downloaded and decoded at once (8 at a time) by a training job
# a job never resumes (its work folder goes when it ends): checkpoints on the way, 0.45 GB each
# with the optimizer's state, would only cost disk
NO_CHECKPOINTS = 10**9


class NotEnoughAnnotations(RuntimeError):
    pass


class TooFewAnnotated(NotEnoughAnnotations):
    """Fewer annotated tasks than MIN_ANNOTATIONS, known before any download: the changes that
    asked for the job are spent (the next RETRAIN_AFTER ask again), not given back."""


STAGE_PROGRESS = ("iteration", "max_iter", "seconds_per_iter", "eta_seconds", "loss")  # one stage's own


def _report(stage: str, **facts: object) -> None:
    job = get_current_job()
    log.info("training: %s %s", stage, facts or "")
    if job is not None:
        if job.meta.get("stage") != stage:  # the box classifier's "10 / 10, ETA 0" is no evaluation's
            for key in STAGE_PROGRESS:
                job.meta.pop(key, None)
        job.meta.update({"stage": stage, **facts, "updated_at": time.time()})
        try:
            job.save_meta()
        except RedisError as exc:  # progress is for people: a queue outage must not fail the training
            log.warning("training: progress not saved (%s)", exc)


def _fetched(services: Services, tasks: list[tuple]):
    """(task id, its boxes, its image or ImageError), fetched FETCH_CHUNK at a time: a large
    project's images are written to disk one chunk after another, never all held at once."""
    for start in range(0, len(tasks), FETCH_CHUNK):
        batch = tasks[start:start + FETCH_CHUNK]
        yield from ((i, t, image) for (i, t, _), image in
                    zip(batch, services.fetcher.fetch_all([reference for *_, reference in batch])))


class ProjectRecords(NamedTuple):
    """A project's annotated tasks as training data."""

    records: list[ImageRecord]
    facts: dict  # what the job reports (its result and progress): counts, label set, failures
    # each used task's annotations (task id -> annotation ids): the version's record, not the job's
    annotations_of: dict[str, list]


def build_records(services: Services, project: int) -> ProjectRecords:
    labels = parse_label_config(services.api.label_config(project))  # UnknownProject: nothing created
    tasks = services.api.annotated_tasks(project)
    conversion = convert(tasks, labels.category_of, services.settings.min_agreement, labels.from_name)
    usable = {t.task_id: t for t in conversion.usable}
    counted = {"annotated_tasks": len(tasks), "unknown_labels": dict(conversion.unknown_labels)}
    if (too_few := not_enough(len(usable), counted, services.settings)) is not None:
        raise TooFewAnnotated(str(too_few))  # before any image is downloaded
    by_id = {t["id"]: t for t in tasks if t["id"] in usable}
    _report("downloading images", tasks=len(tasks), usable=len(usable))
    folder = services.project_dir(project) / "images"
    folder.mkdir(parents=True, exist_ok=True)
    records, failed, annotations_of = [], {}, {}
    for task_id, labelled, image in _fetched(services, [(i, t, through_label_studio(by_id[i]["data"].get(
                                                            labels.data_key), i)) for i, t in usable.items()]):
        if isinstance(image, ImageError):
            failed[task_id] = str(image)
            continue
        height, width = image.shape[:2]
        path = folder / f"task-{task_id}.png"
        partial = folder / f".task-{task_id}.{os.getpid()}.png"
        Image.fromarray(image).save(partial)  # decoded, EXIF applied: detectron2 reads it as we saw it
        os.replace(partial, path)  # a job running beside this one never reads half a file
        boxes = [in_pixels(b, width, height) for b in labelled.boxes]
        records.append(ImageRecord(image_id=str(task_id), path=str(path), width=width, height=height,
                                   boxes=boxes, split="train",  # the held-out ones: promotion.split_holdout
                                   patient=task_patient(by_id[task_id]["data"])))
        annotations_of[str(task_id)] = labelled.annotations
    _forget_images(folder, keep=set(usable))
    facts = {**counted, "used_tasks": len(records),
             # what replayed images must fit
             "label_set": list(taxonomy.project_label_set(labels.to_label, (b.category for r in records
                                                                             for b in r.boxes))),
             "for_review": conversion.for_review, "image_errors": failed,
             # what the gate may score: a box no label names is never shown (detector.emitted)
             "shown_categories": labels.shown_categories()}
    if conversion.unknown_labels:
        log.warning("project %s: annotations with labels not in the BI-RADS mapping were skipped: %s", project,
                    dict(conversion.unknown_labels))
    if failed:
        log.warning("project %s: %d of %d task images could not be downloaded (first: %s)", project, len(failed),
                    len(usable), next(iter(failed.values())))
    return ProjectRecords(records, facts, annotations_of)


def _forget_images(folder: Path, keep: set) -> None:
    """Remove the copies of task images no annotation uses any more (a task deleted in Label
    Studio, an annotation withdrawn): a patient's image is kept only while it is training data."""
    for path in folder.glob("task-*.png"):
        task_id = path.stem.removeprefix("task-")
        if not (task_id.isdigit() and int(task_id) in keep):
            path.unlink(missing_ok=True)


def not_enough(usable: int, facts: dict, settings: Settings) -> NotEnoughAnnotations | None:
    """Why a job with ``usable`` annotated tasks cannot train (None: it can), saying where the
    annotated tasks went: a failed download (Label Studio's key refused, say) is no missing annotation."""
    if usable >= max(1, settings.min_annotations):
        return None
    failed = facts.get("image_errors") or {}
    lost = (f"; {len(failed)} task images could not be downloaded, e.g. {next(iter(failed.values()))}"
            if failed else "")
    unknown = facts.get("unknown_labels")
    skipped = f"; annotations with labels outside the BI-RADS mapping were skipped: {unknown}" if unknown else ""
    return NotEnoughAnnotations(f"{usable} usable annotated tasks of {facts.get('annotated_tasks')}, "
                                f"MIN_ANNOTATIONS is {settings.min_annotations}{lost}{skipped}")


def train_settings(settings: Settings, weights: str, fine_tune: bool,
                   label_set: tuple[str, ...] = ()) -> TrainSettings:
    """A job's schedule: fine-tuning a model directory (the served version, the starter model) is
    short and gentle (FINE_TUNE_*), a first training from scratch or a checkpoint is not. Its
    classes are those ``label_set`` (the project's) can name."""
    chosen = TrainSettings(base_config=settings.train_base_config, weights=weights, label_set=label_set,
                           image_size=settings.train_image_size, epochs=settings.train_epochs,
                           max_iter=settings.train_max_iter or None, batch_size=settings.train_batch_size,
                           bf16=settings.train_bf16, device=settings.device, num_workers=1,
                           checkpoint_period=NO_CHECKPOINTS)
    if fine_tune:
        chosen = fine_tuning.schedule(chosen, weights, settings.fine_tune_epochs, settings.fine_tune_lr,
                                      settings.fine_tune_freeze, settings.fine_tune_classifier_min_lesions)
    return chosen


def plan(settings: Settings, records: list[ImageRecord], weights: str,
         fine_tune: bool, label_set: tuple[str, ...] = ()) -> tuple[TrainSettings, dict]:
    """Training settings sized to this machine, and the estimate recorded in the job status.

    A few probe iterations measure this machine's speed for these settings; the schedule
    (FINE_TUNE_EPOCHS or TRAIN_EPOCHS, or TRAIN_MAX_ITER) is capped so that training fits
    TRAIN_TIME_BUDGET."""
    from model.config import iterations
    from model.train import seconds_per_iteration

    chosen = train_settings(settings, weights, fine_tune, label_set)
    wanted = iterations(chosen, len(records))
    rate = seconds_per_iteration(records, chosen)
    facts = {"seconds_per_iter_probe": round(rate, 3), "iterations_wanted": wanted,
             "schedule": "fine-tune" if fine_tune else "first training", "base_lr": chosen.base_lr}
    if settings.train_time_budget and rate * wanted > settings.train_time_budget:
        capped = max(1, int(settings.train_time_budget / rate))
        chosen = replace(chosen, max_iter=capped)
        facts["capped_by_time_budget"] = settings.train_time_budget
        log.info("%d iterations would take %.0f s here: capped at %d (TRAIN_TIME_BUDGET=%d s)", wanted,
                 rate * wanted, capped, settings.train_time_budget)
    facts["max_iter"] = iterations(chosen, len(records))
    facts["estimated_seconds"] = round(rate * facts["max_iter"])
    return chosen, facts


def replay_pool(settings: Settings) -> list[ImageRecord]:
    """REPLAY_DATA's images in REPLAY_SPLITS (none where it is unset). Raises model.io.DataError,
    naming the variable, where it cannot be read or a split it names holds no image: a job that
    quietly trained without them would be the very fine-tune they were set to prevent."""
    if not settings.replay_data:
        return []
    from model import datasets
    from model.io import DataError

    try:
        return datasets.load_splits(settings.replay_data, settings.replay_splits)
    except datasets.SplitsNotFound as exc:
        raise DataError(f"REPLAY_SPLITS: REPLAY_DATA={exc}") from None
    except DataError as exc:
        raise DataError(f"REPLAY_DATA={settings.replay_data}: {exc}") from None


def replay_records(settings: Settings, project_records: list[ImageRecord],
                   labels: tuple[str, ...] | None = None) -> list[ImageRecord]:
    """The images a fine-tuning job replays beside the project's, named in the project's label set
    ``labels`` (the config's; None: the one its boxes need). DataError where none fits it."""
    pool = replay_pool(settings)
    if not pool or not settings.replay_ratio:
        return []
    from model.io import DataError

    chosen = fine_tuning.replayed(pool, project_records, settings.replay_ratio, labels=labels)
    if not chosen and project_records:
        raise DataError(f"REPLAY_DATA={settings.replay_data}: none of its {len(pool)} images can be named by "
                        f"the project's labels {list(labels or [])}")
    return chosen


def holdout_metrics(model_dir: Path, holdout: list[ImageRecord], settings: Settings,
                    shown_categories: list[str] | None = None) -> dict:
    """A model's metrics on the project's held-out tasks, predicted as it will be served (only
    boxes of ``shown_categories``, the ones the project's labels name; None: all)."""
    return promotion.holdout_metrics(model_dir, holdout, settings.score_threshold, settings.show_boxes,
                                     shown_categories, device=settings.device,
                                     bf16=settings.bf16_choice, box_voting_iou=settings.box_voting,
                                     category_reading=settings.category_reading,
                                     malignancy_reading=settings.malignancy_reading,
                                     proposals=settings.proposals)


def held_out_metrics(out: Path, served: Serving, holdout: list[ImageRecord],
                     settings: Settings, shown_categories: list[str] | None = None) -> tuple[dict, dict | None]:
    """The new version's metrics on the project's held-out tasks (stored in its folder) and the
    served version's (None where nothing is served; where it cannot be evaluated, why, so the
    version's description says it was served without a comparison)."""
    from model.modeldir import update_metrics

    if not holdout:
        return {}, None
    _report("evaluating", images=len(holdout))
    metrics = holdout_metrics(out, holdout, settings, shown_categories)
    update_metrics(out, {"holdout": metrics})
    if served.path is None:
        return metrics, None
    try:
        return metrics, holdout_metrics(served.path, holdout, settings, shown_categories)
    except Exception as exc:  # nothing to compare with: the served one is no yardstick
        log.exception("served version %s could not be evaluated", served.version)
        return metrics, {"not_evaluated": f"{exc.__class__.__name__}: {exc}"}


def refusal(settings: Settings, new: dict, served: dict | None) -> str | None:
    """Why a new version must not replace the served one (None: it may): model.promotion's rule
    with PROMOTE_METRIC, PROMOTE_TOLERANCE and PROMOTE_ALWAYS."""
    reason = promotion.refusal(new, served, settings.promote_metric, settings.promote_tolerance,
                               settings.promote_always)
    return reason and (f"{reason} (PROMOTE_TOLERANCE={settings.promote_tolerance:g}; PROMOTE_ALWAYS=true or "
                       "`birads promote` overrides)")


def nothing_sound_to_compare(served: Serving) -> str | None:
    """Why a version waits for a person where every version of the project fails its checks and
    no starter stands in (predictions answer 503 then): it started afresh and was compared with
    nothing, so it may be far worse than what they were before they broke."""
    if served.version is None and served.problem:
        return (f"not compared with the project's versions ({served.problem}, and no earlier version is "
                "sound): `birads promote` serves this one, or restore theirs")
    return None


def replaced_meanwhile(registry: Registry, current_at_start: str | None) -> str | None:
    """Why a job must not promote over a version someone served by hand (`birads promote`, a
    rollback) while it trained: that choice stands, and the job was compared with another."""
    now = registry.current()
    return None if now == current_at_start else _replaced(ReplacedMeanwhile(current_at_start, now))


def _replaced(change: ReplacedMeanwhile) -> str:
    return f"{change} while this job trained; not served over it (`birads promote` serves this one)"


def _promote_unless_replaced(registry: Registry, version: str, current_at_start: str | None) -> str | None:
    """Promote ``version``; a rollback that lands between the job's check and this switch stands,
    and is the job's refusal."""
    try:
        registry.promote(version, replacing=current_at_start)
    except ReplacedMeanwhile as change:
        refused = _replaced(change)
        registry.describe(**dict(registry.info(version), refused=refused))
        return refused
    except Exception as exc:
        if registry.current() == version:  # switched, then failing to record it: served all the same
            log.exception("project %s: version %s served, but its promotion was not fully recorded",
                          registry.root.name, version)
            return None
        try:  # the version stays, listed with why it is not served; the job fails
            registry.describe(**dict(registry.info(version), refused=f"promotion failed: {exc}"))
        except OSError:
            log.exception("version %s: its refusal could not be recorded", version)
        raise
    return None


# a version's record of its tasks (task id -> the annotations it trained or was judged on): as long
# as the project, so in version.json, never in a job's result or the /versions listing
TASK_LISTS = ("train_tasks", "holdout_tasks")


def task_lists(train_records: list[ImageRecord], holdout: list[ImageRecord],
               annotations_of: dict[str, list]) -> dict[str, dict[str, list]]:
    return {name: {r.image_id: annotations_of[r.image_id] for r in records}
            for name, records in zip(TASK_LISTS, (train_records, holdout))}


def train_project(project: int) -> dict:
    """The RQ job. Returns a JSON-able summary (stored by RQ as the job's result)."""
    settings = Settings.from_env()
    services = Services(settings)
    job = get_current_job()
    queue = TrainingQueue(job.connection, settings) if job else None
    if queue:
        queue.started(project, job.id)
    spent = False  # the changes it took: spent, or given back to count towards the next job
    try:
        waiting = partial(_report, "waiting for the project's running job")
        # one at a time, however many workers
        with queue.training(project, job.id, waiting) if queue else nullcontext(Holding(project)) as holding:
            summary = _train(project, settings, services, job, holding)
        spent = True
        return summary
    except TooFewAnnotated:
        spent = True  # given back, every later annotation would queue a job that fails alike
        raise
    finally:
        if queue:
            queue.ended(project, job.id, give_back=not spent)


def _train(project: int, settings: Settings, services: Services, job, holding: Holding) -> dict:
    """The job's work, once it holds its project (``holding``, checked as it goes)."""
    from model.train import remove_abandoned_work, train, work_dir

    _report("reading annotations", project=project)
    records, facts, annotations_of = build_records(services, project)
    if (refusal_to_train := not_enough(len(records), facts, settings)) is not None:
        raise refusal_to_train
    train_records, holdout = promotion.split_holdout(records, settings.holdout_fraction)
    registry = services.registry(project)
    for work in remove_abandoned_work(registry.versions_dir, settings.job_timeout):
        log.warning("project %s: removed %s, left by a training job that was killed", project, work)
    served = services.serving(project)  # the checked served version (or the starter model)
    parent, current_at_start = served.version, registry.current()
    # the served version (or the starter model, or plain initial weights) seeds the new one
    weights = str(served.path) if served.path else settings.initial_weights
    version = registry.new_version_name()
    out = registry.path(version)

    def progress(info: dict) -> None:
        holding.check()
        _report(**info)  # stage "training", iteration, max_iter, ETA, loss

    fine_tune = served.path is not None
    replayed = replay_records(settings, train_records, tuple(facts["label_set"])) if fine_tune else []
    facts["replay_images"] = len(replayed)
    _report("estimating", images=len(train_records), replay_images=len(replayed))
    chosen, estimate = plan(settings, train_records + replayed, weights, fine_tune, tuple(facts["label_set"]))
    _report("training", iteration=0, images=len(train_records), replay_images=len(replayed), **estimate)
    started = time.perf_counter()
    try:
        train(train_records + replayed, out, chosen, progress=progress)
    finally:  # a job's checkpoints serve no other job: a failed one resumes nothing
        shutil.rmtree(work_dir(out), ignore_errors=True)
    estimate["training_seconds"] = round(time.perf_counter() - started)
    description = {"parent": parent, "project": project, "job_id": job.id if job else None,
                   "train_images": len(train_records), "holdout_images": len(holdout), "timing": estimate,
                   **task_lists(train_records, holdout, annotations_of), **facts}
    try:
        metrics, served_metrics = held_out_metrics(out, served, holdout, settings, facts["shown_categories"])
    except Exception as exc:  # the trained weights stay, described as never served automatically
        registry.describe(version, metrics={}, refused=f"not evaluated: {exc}", **description)
        raise
    refused = (refusal(settings, metrics, served_metrics) or nothing_sound_to_compare(served)
               or replaced_meanwhile(registry, current_at_start))
    registry.describe(version, metrics=metrics, served_metrics=served_metrics, refused=refused, **description)
    if not refused:
        refused = _promote_unless_replaced(registry, version, current_at_start)
    if refused:
        log.warning("project %s: version %s kept but not served: %s", project, version, refused)
    else:
        log.info("project %s: version %s now served (parent %s)", project, version, parent)
    try:  # what is served is decided: failing to tidy old versions must not fail the job
        removed = registry.prune(settings.keep_versions)
    except OSError:
        log.exception("project %s: old versions could not be removed", project)
        removed = []
    if removed:
        log.info("project %s: removed versions %s (KEEP_VERSIONS=%d)", project, ", ".join(removed),
                 settings.keep_versions)
    _report("done", version=version, refused=refused)
    return {"version": version, "parent": parent, "promoted": not refused, "refused": refused,
            "removed_versions": removed,
            "train_images": len(train_records), "holdout_images": len(holdout), "metrics": metrics,
            "served_metrics": served_metrics, "timing": estimate, **facts}

