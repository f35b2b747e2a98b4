"""Whether a box classifier should name a model's boxes: each box of an evaluation report's kept
detections re-named by a freshly trained classifier (``BoxClassifier.refine`` at each blend), then
scored as ``birads evaluate`` scores a model (docs/results.md item 42). Runs no detector, so it
measures on a reference run's stored detections after its weights are gone. Each box keeps its
stored P(malignant); on a report read with ``--malignancy-reading mean`` (the default since item
45) that holds the box's class scores as they were before the re-naming. With ``--reread`` the
classifier also gives each box its rank (which box is the top box) and its P(malignant), read as
served (``malignancy_reading.SERVED_READING``): the whole of what a reference model's classifier
lends its detector, to compare classifiers trained otherwise (``--epochs``; item 46). With
``--ensemble`` the seeds' classifiers are also read as one, their probabilities averaged (item 48);
with ``--flip-at-test`` every classifier reads each crop and its mirror image (item 49); with
``--lesion-shaped-background`` the classifiers train on background crops shaped like lesions (item 51).

    .venv/bin/python scripts/classifier_naming.py --data busbra:../shared/data/BUS-BRA \
        --splits fold1 fold2 fold3 --classes 2 3 5 --out runs/naming-no4 \
        --reports REPORT [REPORT...] [--seeds 42 43 44] [--blends 0 0.5 1] [--epochs 30] [--reread] [--ensemble]
        [--flip-at-test] [--lesion-shaped-background] [--partial-share S] [--rescores 0.5 0.75]

A REPORT is a directory with the report's ``metrics.json`` and ``detections.jsonl``. One
classifier per seed, trained on ``--splits`` with the reference stage's settings (misplaced
background crops at 0.5, ranks by P(lesion) at 0.5) and kept in ``OUT/seed-N/`` (a rerun with the
same classes and settings loads it). Without ``--reread`` only the categories and class scores
change: each box keeps its place, score, rank and malignancy, and each report is scored with its
own decision and thresholds, so blend 0 reproduces the report. ``OUT/rows.jsonl`` holds a row
per (report, seed, blend), written as each is scored; ``OUT/summary.md`` their table.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import cv2
import numpy as np
from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from model import datasets  # noqa: E402
from model.box_classifier import (  # noqa: E402
    BACKGROUND,
    DIRNAME,
    BoxClassifier,
    BoxClassifierSettings,
    has_classifier,
    read_meta,
    recorded_settings,
    train_box_classifier,
)
from model.category_reading import SERVED_READING, relabelled  # noqa: E402
from model.config import cpu_name, resolve_device  # noqa: E402
from model.evaluation.effort import ActionCosts  # noqa: E402
from model.evaluation.evaluate import evaluate  # noqa: E402
from model.evaluation.report import read_detections, read_metrics  # noqa: E402
from model.io import DataError  # noqa: E402
from model.malignancy_reading import SERVED_READING as SERVED_MALIGNANCY  # noqa: E402
from model.malignancy_reading import reread  # noqa: E402
from model.predict import as_rgb  # noqa: E402
from model.pretrain import ProbabilityMean  # noqa: E402
from model.records import Detection, ImageRecord  # noqa: E402

# The reference stage's classifier (scripts/reference_model.sh): background crops beside lesions,
# its P(lesion) half of each box's rank.
TRAINING = BoxClassifierSettings(misplaced_share=0.5, rescore=0.5)


def _kept(folder: Path, classes: list[str], settings: BoxClassifierSettings) -> bool:
    """Whether ``folder`` holds a classifier of ``classes`` trained with ``settings`` (a half
    written one is not: it is trained again)."""
    try:
        if not has_classifier(folder):
            return False
    except DataError:
        return False
    meta = read_meta(folder / DIRNAME)
    return meta["classes"] == [*classes, BACKGROUND] and recorded_settings(meta["settings"]) == asdict(settings)


def seed_classifier(records: list[ImageRecord], classes: list[str], seed: int, out: Path,
                    recipe: BoxClassifierSettings | None = None) -> BoxClassifier:
    """Seed ``seed``'s classifier of ``classes`` trained as ``recipe`` (else ``TRAINING``) says,
    into ``out/seed-N`` unless one of the same classes and settings is there already."""
    folder, settings = out / f"seed-{seed}", replace(recipe or TRAINING, seed=seed)
    if not _kept(folder, classes, settings):
        folder.mkdir(parents=True, exist_ok=True)
        train_box_classifier(records, folder, classes, settings)
    return BoxClassifier(folder / DIRNAME, classes, resolve_device("auto"))


def ensemble(members: list[BoxClassifier]) -> BoxClassifier:
    """``members`` read as one: each box's category, background and malignancy probabilities the
    mean of theirs (``ProbabilityMean``, as item 34's crop learners); the first member's settings."""
    joined = copy.copy(members[0])
    joined.model = ProbabilityMean([member.model for member in members]).eval()
    return joined


def renamed(detection: Detection, grey: np.ndarray, named_by: BoxClassifier, rereads: bool = False) -> Detection:
    """``detection`` with its boxes' categories and class scores from ``named_by`` (its blend), then
    read as the predictor reads them; places and scores kept, ranks and malignancy too unless
    ``rereads``: then those are ``named_by``'s, P(malignant) read as served."""
    if not detection.boxes:
        return detection
    if len(detection.class_scores) != len(detection.boxes):
        raise DataError(f"{len(detection.boxes)} boxes with {len(detection.class_scores)} sets of class "
                        "scores: a classifier blends with the detector's, so each box needs its own")
    boxes, class_scores, malignancy, ranks = named_by.refine(grey, detection.boxes, detection.class_scores)
    named = replace(detection, boxes=tuple(boxes), class_scores=tuple(class_scores))
    if rereads:
        named = reread(replace(named, malignancy=tuple(malignancy), ranks=tuple(ranks)), SERVED_MALIGNANCY)
    return relabelled(named, SERVED_READING)


def scoring(report: Path) -> dict:
    """How ``report`` was scored: its classes, image decision, thresholds, effort costs (``evaluate``'s arguments)."""
    m = read_metrics(report)
    costs = m.get("effort", {}).get("costs")
    return {"classes": m.get("model_classes", m["classes"]), "decision": m["decision"],
            "score_threshold": m["score_threshold"], "biopsy_threshold": m["biopsy_threshold"],
            "costs": ActionCosts(**costs) if costs else None}


def figures(records: list[ImageRecord], detections: list[Detection], scored: dict) -> dict[str, float | None]:
    """What items 42 and 46's rules read, scored as ``scored`` (``scoring``) says."""
    m = evaluate(records, detections, **scored).metrics
    table = m["screening_paper"]
    return {"accuracy": m["category_accuracy"], "kappa": m["category_kappa"],
            "auc": m["screening"]["auc"], "top_box_on_lesion": m["top_box"]["on_lesion"],
            "ap50_lesion": m["ap50_lesion"],
            "table_ii_sen": table["sensitivity"], "table_ii_spe": table["specificity"],
            "table_ii_balanced": (table["sensitivity"] + table["specificity"]) / 2
            if table["sensitivity"] is not None and table["specificity"] is not None else None,
            "table_ii_auc": table["auc"],
            "effort_ratio": m["effort"]["displays"]["top1-only"]["ratio"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the training data, as `birads train --data`")
    parser.add_argument("--splits", nargs="+", required=True)
    parser.add_argument("--classes", nargs="+", required=True, help="the classifier's categories (the model's)")
    parser.add_argument("--reports", nargs="+", required=True, type=Path)
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--blends", nargs="+", type=float, default=[0.0, 0.5, 1.0])
    parser.add_argument("--epochs", type=int, default=TRAINING.epochs, help="the classifiers' schedule")
    parser.add_argument("--reread", action="store_true",
                        help="each box's rank and P(malignant) from the classifier too (else the report's)")
    parser.add_argument("--ensemble", action="store_true",
                        help="also the seeds' classifiers read as one, their probabilities averaged (item 48)")
    parser.add_argument("--flip-at-test", action="store_true",
                        help="each crop read with its mirror image, the two averaged (item 49)")
    parser.add_argument("--lesion-shaped-background", action="store_true",
                        help="train on plain background crops shaped like lesions, not squares (item 51)")
    parser.add_argument("--partial-share", type=float, default=TRAINING.partial_share,
                        help="share of the misplaced background crops drawn inside a lesion, on part of it (item 60)")
    parser.add_argument("--rescores", nargs="+", type=float, default=[TRAINING.rescore],
                        help="P(lesion)'s share of each box's rank to re-read with (with --reread; item 61)")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    training = datasets.load_splits(args.data, args.splits)
    reports = {report: read_detections(report) for report in args.reports}
    scored = {report: scoring(report) for report in args.reports}
    greys = {r.image_id: cv2.cvtColor(as_rgb(r.path), cv2.COLOR_RGB2GRAY)  # as the predictor
             for pairs in reports.values() for r, _ in pairs}
    rows: list[dict] = []
    (args.out / "rows.jsonl").write_text("")  # this run's rows (a kept classifier is not trained again)

    def score(named_by: BoxClassifier, seed: int | str) -> None:
        """Each report re-read by ``named_by`` at each blend: a row each, logged as it is scored."""
        for blend, rescore in ((b, r) for b in args.blends for r in args.rescores):
            named_by.settings = replace(named_by.settings, blend=blend, rescore=rescore,
                                        flip_at_test=args.flip_at_test)
            for report, pairs in reports.items():
                records = [r for r, _ in pairs]
                detections = [renamed(d, greys[r.image_id], named_by, args.reread) for r, d in pairs]
                row = {"report": str(report), "seed": seed, "blend": blend, "rescore": rescore, "epochs": args.epochs,
                       "reread": args.reread, "flip": args.flip_at_test,
                       "lesion_shaped_background": args.lesion_shaped_background,
                       "partial_share": args.partial_share, "cpu": cpu_name(),
                       **figures(records, detections, scored[report])}
                rows.append(row)
                with (args.out / "rows.jsonl").open("a") as log:
                    log.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)

    recipe = replace(TRAINING, epochs=args.epochs, lesion_shaped_background=args.lesion_shaped_background,
                     partial_share=args.partial_share)
    members = []
    for seed in args.seeds:
        started = time.perf_counter()
        members.append(seed_classifier(training, args.classes, seed, args.out, recipe))
        print(f"seed {seed}: classifier ready in {time.perf_counter() - started:.0f} s", flush=True)
        score(members[-1], seed)
    if args.ensemble and len(members) > 1:
        score(ensemble(members), "+".join(str(seed) for seed in args.seeds))
    (args.out / "summary.md").write_text(tabulate(rows, headers="keys", tablefmt="github", floatfmt=".4f") + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
