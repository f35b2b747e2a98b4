"""The paper's labelling loop, simulated on expert-labelled data (`birads simulate`).

Start from ``initial`` labelled images; each round the served model pre-annotates the next
``round_size`` unlabelled images, a simulated expert corrects them from the ground truth the way
that costs it the fewest seconds (``model.evaluation.effort``; each box added, deleted, moved or
relabelled is one correction of that count: ``model.evaluation.corrections``), the
corrected batch joins the labelled images, and a new version is fine-tuned from the served one as
the training jobs do: on their schedule (``model.fine_tuning``), a share of the labelled images held
out, and served only where it does not lose the promotion metric on them (``model.promotion``).
The served version is evaluated each round on a fixed test set. The baseline without
pre-annotation draws every lesion by hand (one correction per expert box). The same
``model.train.train`` and ``model.predict.Predictor`` serve the Label Studio backend.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from model import fine_tuning, promotion, taxonomy  # noqa: E402
from model.config import TrainSettings  # noqa: E402
from model.evaluation import effort  # noqa: E402
from model.evaluation.evaluate import LOW_SCORE, displayed, evaluate, shown_text  # noqa: E402
from model.io import DataError, StagedDirectory  # noqa: E402
from model.modeldir import is_model_dir  # noqa: E402
from model.predict import Predictor  # noqa: E402
from model.records import BOX_VOTING_IOU, Box, Detection, ImageRecord  # noqa: E402
from model.train import train  # noqa: E402

log = logging.getLogger(__name__)
ORDERS = ("random", "uncertain")


@dataclass
class SimulationSettings:
    initial: int = 20
    round_size: int = 20
    rounds: int = 3
    order: str = "random"            # or "uncertain": least confident pre-annotations first
    score_threshold: float = 0.5     # boxes shown to the expert
    display: str = "threshold"       # what the expert is shown (model.evaluation.evaluate.DISPLAYS)
    box_voting_iou: float | None = BOX_VOTING_IOU  # the boxes' places as the backend serves them
    costs: effort.ActionCosts = field(default_factory=effort.ActionCosts)
    seed: int = 0
    train: TrainSettings = field(default_factory=TrainSettings)  # round 0's, unless it fine-tunes
    # each fine-tune's schedule, as the backend's training jobs run it (model.fine_tuning)
    fine_tune_epochs: float = fine_tuning.EPOCHS
    fine_tune_lr: float = fine_tuning.BASE_LR
    replay_ratio: float = fine_tuning.REPLAY_RATIO  # with a replay pool: its images per labelled one
    fine_tune_freeze: tuple[str, ...] = fine_tuning.FREEZE  # parts each fine-tune holds (FREEZABLE)
    classifier_min_lesions: int = fine_tuning.CLASSIFIER_MIN_LESIONS  # fewer: the box classifier carried
    replay_source: str = ""          # where the replay pool came from, for the report
    # the jobs' promotion gate (model.promotion); holdout_fraction 0: every version served, as
    # docs/results.md items 6-51 simulated
    holdout_fraction: float = promotion.HOLDOUT_FRACTION
    promote_metric: str = promotion.PROMOTE_METRIC
    promote_tolerance: float = promotion.PROMOTE_TOLERANCE

    def fine_tuning(self, model_dir: str | Path) -> TrainSettings:
        """The training settings of a round that fine-tunes ``model_dir``."""
        return fine_tuning.schedule(self.train, str(model_dir), self.fine_tune_epochs, self.fine_tune_lr,
                                    self.fine_tune_freeze, self.classifier_min_lesions)


def pick_next(unlabelled: list[ImageRecord], count: int, order: str,
              detections: Sequence[Detection] | None = None, threshold: float = 0.5,
              display: str = "threshold") -> list[int]:
    """Indices into ``unlabelled`` of the next batch: in order, or least confident first, by the
    task score the backend gives what ``display`` shows."""
    if order == "random":
        return list(range(min(count, len(unlabelled))))
    if order != "uncertain" or detections is None:
        raise ValueError(f"order must be one of {ORDERS} (uncertain needs detections)")
    confidence = [d.confidence(threshold, displayed(d, threshold, display)) for d in detections]
    return sorted(range(len(unlabelled)), key=confidence.__getitem__)[:count]


def _rolled(boxes: Sequence[Box], classes: Sequence[str]) -> list[Box]:
    return [replace(b, category=taxonomy.roll_up(b.category, classes)) for b in boxes]


def simulate(pool: list[ImageRecord], holdout: list[ImageRecord], out: str | Path,
             settings: SimulationSettings, replay: Sequence[ImageRecord] = ()) -> dict:
    """Run the loop; write ``out`` (rounds' models, simulation.json, .md and PNG plots). Each
    fine-tune replays ``replay`` images beside the labelled ones, as the training jobs do."""
    if settings.order not in ORDERS:
        raise DataError(f"--order must be one of {', '.join(ORDERS)}")
    if len(pool) < settings.initial + settings.round_size:
        raise DataError(f"{len(pool)} images cannot fill {settings.initial} initial + one round of "
                        f"{settings.round_size}")
    if not holdout:
        raise DataError("no held-out images to evaluate on")
    out = Path(out)
    StagedDirectory(out).check()
    work = out.with_name(f".{out.name}.rounds")
    work.mkdir(parents=True, exist_ok=True)
    order = list(pool)
    random.Random(settings.seed).shuffle(order)
    labelled, unlabelled = order[: settings.initial], order[settings.initial:]
    started = time.perf_counter()
    # round 0 fine-tunes a starter model as a project's first job does, or trains from nothing
    weights = settings.train.weights
    fine_tunes = bool(weights) and is_model_dir(weights)
    served = Path(weights) if fine_tunes else None  # what a project serves before its first job
    tested: dict[Path, dict] = {}  # the test set's figures of each version served
    starter = _tested(served, holdout, settings, tested) if served else None
    first = settings.fine_tuning(weights) if fine_tunes else settings.train
    served, gate = _next_version(0, labelled, served, first, replay if fine_tunes else (), settings, work)
    no_effort = dict.fromkeys(effort.SUMMARY_KEYS)  # round 0: nothing pre-annotated yet
    rows = [_round_row(0, served, labelled, holdout, settings, [], started, tested) | no_effort | gate]
    for number in range(1, settings.rounds + 1):
        if not unlabelled:
            break
        predictor = _predictor(served, settings)
        classes = predictor.classes
        seen = predictor([r.path for r in unlabelled]) if settings.order == "uncertain" else None
        chosen = pick_next(unlabelled, settings.round_size, settings.order, seen, settings.score_threshold,
                           settings.display)
        batch = [unlabelled[i] for i in chosen]
        unlabelled = [r for i, r in enumerate(unlabelled) if i not in set(chosen)]
        detections = [seen[i] for i in chosen] if seen else predictor([r.path for r in batch])
        truths = [_rolled(r.boxes, classes) for r in batch]
        shown = [displayed(d, settings.score_threshold, settings.display) for d in detections]
        edits = [effort.edits(t, s, settings.costs) for t, s in zip(truths, shown)]  # the seconds' pairing
        seconds = effort.summary(truths, shown, settings.costs)
        labelled = labelled + batch  # the expert's corrected boxes are the ground truth
        served, gate = _next_version(number, labelled, served, settings.fine_tuning(served), replay, settings, work)
        rows.append(_round_row(number, served, labelled, holdout, settings,
                               [(e, len(r.boxes)) for e, r in zip(edits, batch)], started, tested)
                    | seconds | gate)
        log.info("round %d: %s", number, rows[-1])
    result = {"settings": _settings_record(settings), "starter": starter, "rounds": rows}
    with StagedDirectory(out) as staging:
        (staging / "simulation.json").write_text(json.dumps(result, indent=1))
        _plot(rows, staging, starter)
        (staging / "simulation.md").write_text(_markdown(rows, settings, starter))
        (work).rename(staging / "models")
    return result


def _replayed(replay: Sequence[ImageRecord], labelled: list[ImageRecord],
              settings: SimulationSettings) -> list[ImageRecord]:
    return fine_tuning.replayed(replay, labelled, settings.replay_ratio, settings.seed) if replay else []


def _predictor(model_dir: Path, settings: SimulationSettings) -> Predictor:
    # on the device its rounds train on (--device); bf16 where that device runs it natively
    return Predictor(model_dir, device=settings.train.device, score_threshold=LOW_SCORE,
                     box_voting_iou=settings.box_voting_iou)


def _next_version(number: int, labelled: list[ImageRecord], served: Path | None, schedule: TrainSettings,
                  replay: Sequence[ImageRecord], settings: SimulationSettings, work: Path) -> tuple[Path, dict]:
    """A round's job: a new version trained on the labelled images not held out (and replayed
    ones), compared with the served version on those held out; the version served after it, and
    what the gate saw."""
    trained_on, held = promotion.split_holdout(labelled, settings.holdout_fraction)
    replayed = _replayed(replay, trained_on, settings)
    candidate = train(trained_on + replayed, work / f"round-{number}", schedule)
    new = old = reason = None
    if held and served is not None:
        options = {"device": settings.train.device, "box_voting_iou": settings.box_voting_iou}
        new = promotion.holdout_metrics(candidate, held, settings.score_threshold, settings.display, **options)
        old = promotion.holdout_metrics(served, held, settings.score_threshold, settings.display, **options)
        reason = promotion.refusal(new, old, settings.promote_metric, settings.promote_tolerance)
    metric = settings.promote_metric
    gate = {"train_images": len(trained_on), "held_out_images": len(held), "replay_images": len(replayed),
            "candidate": candidate.name, "promoted": reason is None, "refused": reason,
            f"held_out_{metric}": new and new.get(metric), f"held_out_{metric}_served": old and old.get(metric)}
    return (served if reason else candidate), gate


def _tested(model_dir: Path, holdout: list[ImageRecord], settings: SimulationSettings,
            tested: dict[Path, dict]) -> dict:
    """A served version's figures on the fixed test set (once per version: a refused candidate
    leaves the served one, and its figures, as they were)."""
    if model_dir not in tested:
        predictor = _predictor(model_dir, settings)
        # screening from the most confident box: a model-quality figure, even while scores are low
        m = evaluate(holdout, predictor([r.path for r in holdout]), predictor.classes,
                     settings.score_threshold, decision="top", costs=settings.costs).metrics
        screening = m.get("screening") or {}
        shown = ((m.get("effort") or {}).get("displays") or {}).get(settings.display) or {}
        tested[model_dir] = {"ap50": m["ap50"], "ap50_lesion": m["ap50_lesion"],
                             "category_accuracy": m.get("category_accuracy"), "test_effort_ratio": shown.get("ratio"),
                             "sensitivity": screening.get("sensitivity"),
                             "specificity": screening.get("specificity")}
    return tested[model_dir]


def _round_row(number, served, labelled, holdout, settings, edits, started, tested) -> dict:
    images = len(edits)
    return {"round": number, "model": Path(served).name, "labelled_images": len(labelled),
            "batch_images": images,
            "corrections_per_image": sum(e.total for e, _ in edits) / images if images else None,
            "baseline_corrections_per_image": sum(n for _, n in edits) / images if images else None,
            "acceptance_rate": sum(e.total == 0 for e, _ in edits) / images if images else None,
            **_tested(served, holdout, settings, tested),
            "elapsed_seconds": round(time.perf_counter() - started, 1)}


def _plot(rows: list[dict], folder: Path, starter: dict | None = None) -> None:
    done = [r for r in rows if r["corrections_per_image"] is not None]
    rounds = [r["round"] for r in done]
    figure, (seconds, clicks) = plt.subplots(1, 2, figsize=(9, 3.5))
    seconds.plot(rounds, [r["seconds_per_image"] for r in done], "o-", label="with pre-annotation")
    seconds.plot(rounds, [r["by_hand_seconds_per_image"] for r in done], "s--", label="drawn by hand")
    seconds.set_ylabel("expert-seconds per image")
    clicks.plot(rounds, [r["corrections_per_image"] for r in done], "o-", label="with pre-annotation")
    clicks.plot(rounds, [r["baseline_corrections_per_image"] for r in done], "s--", label="drawn by hand")
    clicks.set_ylabel("expert corrections per image")
    for axes in (seconds, clicks):
        axes.set_xticks(rounds)
        axes.set_xlabel("round")
        axes.legend()
    figure.tight_layout()
    figure.savefig(folder / "corrections.png", dpi=110)
    plt.close(figure)
    figure, (axes, ratio) = plt.subplots(1, 2, figsize=(9, 3.5))
    axes.plot([r["train_images"] for r in rows], [r["ap50"] for r in rows], "o-", label="AP50 (BI-RADS)")
    axes.plot([r["train_images"] for r in rows], [r["ap50_lesion"] for r in rows], "s--", label="AP50 (lesion)")
    axes.set_xlabel("training images")
    axes.set_ylabel("held-out AP50")
    axes.legend()
    # the served version's expert-seconds on the fixed test set: what "falling round by round" reads
    ratio.plot([r["round"] for r in rows], [r.get("test_effort_ratio") for r in rows], "o-", label="served version")
    if starter and starter.get("test_effort_ratio") is not None:
        ratio.axhline(starter["test_effort_ratio"], color="grey", linestyle=":", label="starter")
    ratio.set_xticks([r["round"] for r in rows])
    ratio.set_xlabel("round")
    ratio.set_ylabel("test set: seconds with / by hand")
    ratio.legend()
    figure.tight_layout()
    figure.savefig(folder / "ap50.png", dpi=110)
    plt.close(figure)


# (the served version's name, what the gate decided, and the test set's category accuracy and
# expert-seconds ratio since docs/results.md item 52)
ROUND_COLUMNS = ["round", "model", "labelled_images", "train_images", "held_out_images", "replay_images",
                 "batch_images", *effort.SUMMARY_KEYS, "corrections_per_image", "baseline_corrections_per_image",
                 "acceptance_rate", "promoted", "ap50", "ap50_lesion", "category_accuracy", "test_effort_ratio",
                 "sensitivity", "specificity", "elapsed_seconds"]


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def schedule_text(settings: dict) -> str:
    """Each fine-tune's schedule in words, from a simulation.json's settings: a fixed count (results
    items 6-36), else the training jobs' epochs (item 37), what it replayed (item 38) and what it
    held as served (item 53)."""
    train = settings["train"]
    length = (f"{train['max_iter']} iterations" if train.get("max_iter")
              else f"{settings['fine_tune_epochs']:g} augmented epochs")
    text = f"{length} at learning rate {settings.get('fine_tune_lr', train['base_lr']):g}"
    if settings.get("replay_source"):
        text += f", replaying {settings['replay_ratio']:g} image(s) of {settings['replay_source']} per labelled one"
    if settings.get("fine_tune_freeze"):
        text += f", holding the {' and the '.join(settings['fine_tune_freeze'])} as served"
    if settings.get("classifier_min_lesions"):
        text += (f", the served box classifier carried until the labelled images hold "
                 f"{settings['classifier_min_lesions']} lesions")
    return text


def gate_text(settings: dict) -> str:
    """The promotion gate in words, from a simulation.json's settings (none before item 52)."""
    fraction = settings.get("holdout_fraction") or 0
    if not fraction:
        return "every new version served"
    return (f"{fraction:.0%} of the labelled images held out; a new version served unless its "
            f"{settings['promote_metric']} on them is more than {settings['promote_tolerance']:g} below "
            "the served version's (as the training jobs)")


def _settings_record(settings: SimulationSettings) -> dict:
    return {**asdict(settings), "train": settings.train.to_dict()}


def _markdown(rows: list[dict], settings: SimulationSettings, starter: dict | None = None) -> str:
    record = _settings_record(settings)
    lines = [f"# Labelling loop simulation ({settings.order} order)", "",
             f"{settings.initial} initial images, {settings.round_size} per round, {settings.rounds} rounds; "
             f"the expert is shown {shown_text(settings.display, settings.score_threshold)}. "
             f"Each fine-tune: {schedule_text(record)}; {gate_text(record)}. "
             f"Action costs in seconds: {settings.costs.to_dict()} (model/evaluation/effort.py). "
             "Each row's test-set figures are the served version's; held-out screening (malignant vs benign, "
             "pathology) takes each image's most confident box.", ""]
    if starter:
        lines += ["The starter on the test set: " + ", ".join(f"{k} {_fmt(v)}" for k, v in starter.items()) + ".", ""]
    lines += ["| " + " | ".join(ROUND_COLUMNS) + " |", "|" + "---|" * len(ROUND_COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k in ROUND_COLUMNS) + " |" for r in rows]
    lines += ["", "![corrections](corrections.png) ![AP50](ap50.png)", ""]
    return "\n".join(lines)
