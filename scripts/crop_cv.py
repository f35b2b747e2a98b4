"""Cross-validate a crop-classifier lever: each arm trained on all folds but one, scored on that one.

    .venv/bin/python scripts/crop_cv.py --data busbra:../shared/data/BUS-BRA --out runs/crop-cv \
        [--arms ARM...] [--folds fold1 fold2 fold3 fold4] [--epochs 30]

The learner is the box classifier's (``model/box_classifier.py``: a ResNet-18 from random weights,
the settings of ``BoxClassifierSettings`` without item 43's geometry), the cheap stand-in for the
detector's trunk, which the same crop code pretrains (``model/pretrain.py``). Rotating the held-out
fold keeps a lever from being judged on a single split. Each (arm, fold) result is appended to
``OUT/rows.jsonl`` as it finishes, so a stopped run resumes where it stopped; ``OUT/summary.md`` is
rewritten after each. An ensemble arm trains several learners per fold and keeps each, once
trained, under ``OUT/members/``: a fold stopped between them resumes from those it finished.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from tabulate import tabulate
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from model import datasets  # noqa: E402
from model.box_classifier import BoxClassifierSettings, recorded_settings, seeded  # noqa: E402
from model.config import cpu_name, resolve_device, use_bf16  # noqa: E402
from model.pretrain import ProbabilityMean, crop_classes, evaluate_crops, fit_crop_classifier  # noqa: E402

FOLDS = ["fold1", "fold2", "fold3", "fold4"]
# One lever each, against the box classifier's defaults ("stretch"; rows logged before item 27
# trained without the ordinal loss, whose arm was then "ordinal-1").
ARMS: dict[str, dict] = {
    "stretch": {},                       # every box stretched to a square crop (the default)
    "keep-aspect": {"keep_aspect": True},  # a square about the longer side: shape survives
    "no-vflip": {"vertical_flip": False},  # no upside-down ultrasound: depth always runs down
    "crop-160": {"crop_size": 160},     # nearer native: a 1.5x crop of a ~100 px lesion is ~150 px
    "smooth-0.1": {"label_smoothing": 0.1},  # one reading per lesion: softer category targets
    "context-2": {"context": 2.0},      # more surroundings: posterior shadowing, the tissue around
    "unordered": {"ordinal_loss": 0.0},  # categories as unordered classes (the default until item 27)
    "ordinal-2": {"ordinal_loss": 2.0},  # the ordinal term weighing twice the default's (item 28)
    "outline": {"outline_loss": 1.0},  # also outline the lesion from the expert's mask (item 29)
    "outline-2": {"outline_loss": 2.0},  # the outline weighing twice item 29's (item 30)
    "outline-0.5": {"outline_loss": 0.5},  # the outline at half item 29's weight (item 30)
    # twice the schedule (60 epochs at the default 30): 30 epochs are only ~530 SGD steps (item 31)
    "epochs-60": {"epochs_factor": 2},
    "outline-epochs-60": {"outline_loss": 1.0, "epochs_factor": 2},  # items 29 and 31 together (item 33)
    # three of the baseline (no other lever) from other random weights, their probabilities
    # averaged (item 34); its run also files each member and the first two's mean (MEMBER_ARMS)
    "ensemble-3": {"seeds": (42, 43, 44)},
    # a lever again from other random weights, against the plain learner of the same seed (item 40)
    "seed-43": {"seed": 43},
    "outline-seed-43": {"outline_loss": 1.0, "seed": 43},
    # the heads also read each box's shape, size and depth, which the stretched crop hides (item 43)
    "geometry": {"geometry": True},
    "geometry-seed-43": {"geometry": True, "seed": 43},
    "geometry-seed-44": {"geometry": True, "seed": 44},  # a third seed on item 78's curve (item 81)
}
BASELINE = "stretch"
# Every arm's learner is the box classifier's as items 12-43 measured it: without the geometry that
# item 43 then made its default, so the baseline and the rows filed before stay the same learner.
BEFORE_GEOMETRY = {"geometry": False}
DEFAULT_SEED = BoxClassifierSettings().seed


def member_arm(seed: int) -> str:
    """The arm an ensemble's member is filed under: the default seed's is the baseline."""
    return BASELINE if seed == DEFAULT_SEED else f"seed-{seed}"


# Rows an ensemble's run files besides its own and the baseline's.
MEMBER_ARMS = [name for lever in ARMS.values() for name in
               [*(member_arm(s) for s in lever.get("seeds", ()) if s != DEFAULT_SEED),
                *(["ensemble-2"] if "seeds" in lever else [])]]


def _scores(model: nn.Module, held_out: list, classes: list[str], settings: BoxClassifierSettings,
            device: str) -> dict:
    scores = evaluate_crops(model, held_out, classes, settings, device)
    # The same model reading each crop and its mirror image (test-time flip, item 27).
    return scores | {"flipped": evaluate_crops(model, held_out, classes,
                                               replace(settings, flip_at_test=True), device)}


def _trained(train: list, classes: list[str], settings: BoxClassifierSettings, device: str,
             keep: Path | None) -> tuple[nn.Module, float]:
    """A crop learner trained from ``settings.seed``'s random weights, and its training seconds;
    with ``keep``, saved there once trained and loaded from there by a rerun (an ensemble's fold
    trains several: a run stopped between them keeps those it finished)."""
    model = seeded(len(classes), settings, device)  # every arm and fold from the same weights (per seed)
    saved = torch.load(keep, map_location=device, weights_only=True) if keep is not None and keep.exists() else {}
    # another recipe or number format: trained again (a member saved before a setting existed ran
    # as UNRECORDED says)
    if saved and recorded_settings(saved["settings"]) == asdict(settings):
        model.load_state_dict(saved["state"])
        return model, saved["seconds"]
    started = time.perf_counter()
    fit_crop_classifier(model, train, classes, settings, device)
    seconds = round(time.perf_counter() - started, 1)
    if keep is not None:
        keep.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state": model.state_dict(), "seconds": seconds, "settings": asdict(settings)},
                   keep.with_suffix(".part"))
        keep.with_suffix(".part").replace(keep)  # a stopped save leaves no half-written member
    return model, seconds


def run_one(records: list, fold: str, settings: BoxClassifierSettings, device: str,
            seeds: tuple[int, ...] = (), keep: Path | None = None) -> dict:
    """Train on every fold but ``fold``; score the held-out fold's lesion crops. With ``seeds``, one
    model from each seed's random weights (each kept in the folder ``keep`` once trained), scored
    alone (``members``) and averaged (the first two as ``ensemble_2``, all of them as the row's own
    scores)."""
    train = [r for r in records if r.split != fold]
    held_out = [r for r in records if r.split == fold]
    classes = crop_classes(train)
    members, seconds = [], []
    for seed in seeds or (settings.seed,):
        kept = keep / f"{fold}-seed{seed}.pt" if keep is not None and seeds else None
        model, took = _trained(train, classes, replace(settings, seed=seed), device, kept)
        members.append(model)
        seconds.append(took)
    row = {"train_crops": sum(len(r.boxes) for r in train), "wall_seconds": sum(seconds)}
    if not seeds:
        return _scores(members[0], held_out, classes, settings, device) | row
    return (_scores(ProbabilityMean(members), held_out, classes, settings, device) | row
            | {"seeds": list(seeds),
               "members": [_scores(m, held_out, classes, settings, device) | {"wall_seconds": t}
                           for m, t in zip(members, seconds)],
               "ensemble_2": _scores(ProbabilityMean(members[:2]), held_out, classes, settings, device)})


def members_dir(out: Path, arm: str, epochs: int, folds: list[str]) -> Path:
    """Where an ensemble arm keeps its trained members: one folder per experiment, as its rows."""
    return out / "members" / f"{arm}-{epochs}-epochs-{'-'.join(folds)}"


def member_rows(row: dict) -> list[dict]:
    """An ensemble's row split into the rows of the arms it also trained: each member (the default
    seed's is the baseline arm) and the first two members' mean."""
    common = {k: row[k] for k in ("fold", "epochs", "folds", "train_crops", "device", "cpu", "bf16")}
    common |= {"from": row["arm"]}
    rows = [common | member | {"arm": member_arm(seed)} for seed, member in zip(row["seeds"], row["members"])]
    ensemble_2 = sum(m["wall_seconds"] for m in row["members"][:2])
    return rows + [common | row["ensemble_2"] | {"arm": "ensemble-2", "wall_seconds": ensemble_2}]


def _delta(row: dict, baseline: dict | None, key: str, scale: float) -> float | None:
    if baseline is None or row.get(key) is None or baseline.get(key) is None:
        return None  # rows logged before item 26 lack the median reading
    return (row[key] - baseline[key]) * scale


def plain_arm(arm: str) -> str:
    """The learner a lever is measured against: the baseline's recipe from the lever's own seed."""
    return member_arm(ARMS.get(arm, {}).get("seed", DEFAULT_SEED))


def _baseline(row: dict, rows: list[dict]) -> dict | None:
    """What ``row`` is compared with: for an ensemble and the rows split from it, its own member of
    the default seed, trained with it (item 34's rule); for a lever from another seed, that seed's
    plain learner; for a seed's plain learner or any other arm, the baseline arm; always on the
    same held-out fold."""
    if row["arm"] == BASELINE:
        return None
    source = row if "members" in row else next(
        (r for r in rows if r["arm"] == row.get("from") and r["fold"] == row["fold"] and "members" in r), None)
    if source is not None:
        return source["members"][source["seeds"].index(DEFAULT_SEED)]
    against = plain_arm(row["arm"])
    against = BASELINE if against == row["arm"] else against
    return next((r for r in rows if r["arm"] == against and r["fold"] == row["fold"]), None)


def _signed(values: list[float | None], unit: str) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return ""
    mean = f"{statistics.mean(known):+.{1 if unit else 3}f}{unit}"
    return mean if len(values) == 1 else f"{mean}, better on {sum(v > 0 for v in known)} of {len(known)}"


def _median(*rows: dict, flipped: bool = False) -> str:
    """The same models' mean accuracy with the category read as the softmax's median (rows logged
    before item 26 lack it); ``flipped``: each crop read with its mirror image (rows before item 27
    lack it)."""
    values = [(r.get("flipped", {}) if flipped else r).get("birads_accuracy_median") for r in rows]
    return "" if None in values else f"{statistics.mean(values):.2%}"


def summary(rows: list[dict]) -> str:
    """Per arm run so far: each fold's BI-RADS accuracy and pathology AUC, their mean and spread,
    and the change against its baseline (``_baseline``) on the same held-out fold (the folds differ
    more from each other than the arms do, so arms compare fold by fold)."""
    table = []
    for arm in (a for a in dict.fromkeys([*ARMS, *MEMBER_ARMS]) if any(r["arm"] == a for r in rows)):
        mine = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["fold"])
        against = [_baseline(r, rows) for r in mine]  # the baseline's change columns stay empty
        d_acc = [_delta(r, b, "birads_accuracy", 100) for r, b in zip(mine, against)]
        d_med = [_delta(r, b, "birads_accuracy_median", 100) for r, b in zip(mine, against)]
        d_auc = [_delta(r, b, "pathology_auc", 1) for r, b in zip(mine, against)]
        for r, da, dm, du in zip(mine, d_acc, d_med, d_auc):
            auc = "n/a" if r["pathology_auc"] is None else f"{r['pathology_auc']:.3f}"
            table.append([arm, r["fold"], r["crops"], f"{r['birads_accuracy']:.2%}", _median(r),
                          _median(r, flipped=True), auc, _signed([da], " pt"), _signed([dm], " pt"),
                          _signed([du], ""), f"{r['wall_seconds'] / 60:.1f}"])
        if len(mine) > 1 and all(r["pathology_auc"] is not None for r in mine):
            acc = [r["birads_accuracy"] for r in mine]
            auc = [r["pathology_auc"] for r in mine]
            table.append([arm, f"mean of {len(mine)} (sd)", sum(r["crops"] for r in mine),
                          f"{statistics.mean(acc):.2%} ({statistics.stdev(acc):.2%})", _median(*mine),
                          _median(*mine, flipped=True),
                          f"{statistics.mean(auc):.3f} ({statistics.stdev(auc):.3f})",
                          _signed(d_acc, " pt"), _signed(d_med, " pt"), _signed(d_auc, ""), ""])
    return tabulate(table, ["arm", "held-out fold", "lesions", "BI-RADS accuracy",
                            "median reading (item 26)", "median, crop + mirror (item 27)", "pathology AUC",
                            "accuracy vs baseline", "median vs baseline", "AUC vs baseline",
                            "training minutes"], tablefmt="github")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="busbra:DIR (any FORMAT:PATH with folds)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--folds", nargs="+", default=FOLDS,
                        help="the folds taking part: each is held out in turn, the others train")
    parser.add_argument("--epochs", type=int, help="instead of the box classifier's default")
    args = parser.parse_args(argv)
    # the crop learner logs each epoch: a fold takes minutes to tens of minutes
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    records = [r for r in datasets.load(args.data) if r.split in args.folds]
    missing = set(args.folds) - {r.split for r in records}
    if missing:
        parser.error(f"{args.data}: no images in {sorted(missing)}")
    device = resolve_device("auto")
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "rows.jsonl"
    epochs = args.epochs or BoxClassifierSettings().epochs
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    folds = sorted(args.folds)
    # Another schedule, or other folds to train on, is another experiment.
    rows = [r for r in rows if r["epochs"] == epochs and r.get("folds", FOLDS) == folds]
    # Fold by fold, every arm in turn: a run stopped early still compares arms on the same folds.
    for fold in args.folds:
        for arm in args.arms:
            if any(r["arm"] == arm and r["fold"] == fold for r in rows):
                continue
            # An arm may stretch the schedule; its rows still file under the experiment's --epochs.
            lever = dict(ARMS[arm])
            lever["epochs"] = epochs * lever.pop("epochs_factor", 1)
            seeds = lever.pop("seeds", ())
            settings = replace(BoxClassifierSettings(), **(BEFORE_GEOMETRY | lever))
            settings = replace(settings, bf16=use_bf16(settings.bf16, device))
            # where and in which number format: folds of one experiment may train on other machines
            row = {"arm": arm, "fold": fold, "epochs": epochs, "folds": folds, "device": device,
                   "cpu": cpu_name(), "bf16": settings.bf16,
                   **run_one(records, fold, settings, device, seeds, members_dir(args.out, arm, epochs, folds))}
            new = [row] + [r for r in (member_rows(row) if seeds else [])  # not twice
                           if not any(o["arm"] == r["arm"] and o["fold"] == fold for o in rows)]
            rows += new
            with log.open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in new)
            (args.out / "summary.md").write_text(summary(rows) + "\n")
            print(json.dumps(row), flush=True)
    print(summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
