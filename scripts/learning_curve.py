"""A crop learner's learning curve: how its held-out figures grow with the number of labelled lesions
(docs/results.md item 78). Reads ``scripts/crop_cv.py`` outputs, one per training-set size (the same
held-out folds, fewer folds teaching them: ``--folds fold4 fold3 --epochs 90`` trains on one fold,
``--folds fold4 fold3 fold2 --epochs 45`` on two, all four folds at 30 epochs on three), and fits,
per held-out fold, the least-squares slope of each figure on log2 of the training lesions: points
of BI-RADS accuracy (median reading, as served) and of pathology AUC per doubling of the data.

    .venv/bin/python scripts/learning_curve.py runs/curve-1 runs/curve-2 runs/curve-3 \
        --out docs/results/crop-learning-curve [--arms geometry geometry-seed-43] [--folds fold4 fold3]

Writes ``OUT/summary.md`` (each row, the slopes, item 78's verdict) and ``OUT/curve.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tabulate import tabulate  # noqa: E402

FIGURES = {"birads_accuracy_median": ("BI-RADS accuracy (median reading)", 100.0, "pt"),
           "pathology_auc": ("pathology AUC", 1.0, "")}
ACCURACY = "birads_accuracy_median"
TARGET = 0.60                   # issue 8's BI-RADS accuracy target, read on fold 4
DATA_BOUND, CEILING = 2.0, 1.0  # accuracy points per doubling: item 78's reading, fixed before its run


def read_rows(runs: list[Path], arms: list[str], folds: list[str]) -> list[dict]:
    """Every row of ``arms`` held out on ``folds`` in the crop_cv outputs ``runs``."""
    rows = []
    for run in runs:
        path = run / "rows.jsonl"
        if not path.exists():
            raise SystemExit(f"{run}: no rows.jsonl (a crop_cv.py output folder?)")
        rows += [r for r in map(json.loads, path.read_text().splitlines())
                 if r["arm"] in arms and r["fold"] in folds]
    return rows


def curve(rows: list[dict], key: str) -> dict[str, list[tuple[int, float]]]:
    """Per held-out fold, (training lesions, the figure's mean over the arms run at that size),
    smallest set first."""
    grouped: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row.get(key) is not None:
            grouped[row["fold"]][row["train_crops"]].append(row[key])
    return {fold: sorted((n, statistics.mean(v)) for n, v in sizes.items()) for fold, sizes in grouped.items()}


def slope(points: list[tuple[int, float]]) -> tuple[float, float] | None:
    """Least-squares (slope per doubling, intercept at log2 n = 0) of figure on log2(lesions); None
    with fewer than two sizes."""
    if len({n for n, _ in points}) < 2:
        return None
    fitted = np.polyfit([math.log2(n) for n, _ in points], [v for _, v in points], 1)
    return float(fitted[0]), float(fitted[1])


def lesions_for(fit: tuple[float, float], target: float) -> float | None:
    """Training lesions at which the fitted line reaches ``target`` (an extrapolation); None where
    it does not rise."""
    per_doubling, intercept = fit
    if per_doubling < 1e-6:  # flat within float rounding
        return None
    try:
        return 2 ** ((target - intercept) / per_doubling)
    except OverflowError:
        return math.inf


def verdict(accuracy: dict[str, list[tuple[int, float]]]) -> str:
    """Item 78's reading of the accuracy curves: data-bound, at its ceiling, or undecided."""
    per_fold = {}
    for fold, points in accuracy.items():
        fit = slope(points)
        if fit is None:
            return "undecided: a fold has fewer than two sizes"
        falls_last = len(points) > 1 and points[-1][1] < points[-2][1]
        per_fold[fold] = 0.0 if falls_last else fit[0] * 100  # falling from 2 to 3 folds: at its ceiling
    if all(s >= DATA_BOUND for s in per_fold.values()):
        return "data-bound"
    if all(s < CEILING for s in per_fold.values()):
        return "at its ceiling"
    return "undecided"


def summary(rows: list[dict]) -> str:
    table = [[r["arm"], r["fold"], r["train_crops"], r["epochs"], f"{r[ACCURACY]:.2%}",
              "n/a" if r.get("pathology_auc") is None else f"{r['pathology_auc']:.3f}",
              f"{r['wall_seconds'] / 60:.1f}"]
             for r in sorted(rows, key=lambda r: (r["fold"], r["train_crops"], r["arm"]))]
    lines = [tabulate(table, ["arm", "held-out fold", "training lesions", "epochs", "BI-RADS accuracy (median)",
                              "pathology AUC", "training minutes"], tablefmt="github"), ""]
    fits = []
    for key, (name, scale, unit) in FIGURES.items():
        for fold, points in sorted(curve(rows, key).items()):
            fit = slope(points)
            means = ", ".join(f"{n}: {v * scale:.{1 if unit else 3}f}" for n, v in points)
            reach = lesions_for(fit, TARGET) if fit and key == ACCURACY else None
            fits.append([name, fold, means, "n/a" if fit is None else f"{fit[0] * scale:+.{2 if unit else 4}f}{unit}",
                         "" if key != ACCURACY else ("never (not rising)" if reach is None else f"{reach:,.0f}")])
    lines += [tabulate(fits, ["figure", "held-out fold", "mean over arms, by training lesions",
                              "slope per doubling", f"lesions for {TARGET:.0%} (extrapolated)"], tablefmt="github"),
              "", f"Item 78's reading (>= {DATA_BOUND} points per doubling on every fold: data-bound; "
              f"< {CEILING} on every fold: at its ceiling): **{verdict(curve(rows, ACCURACY))}**"]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, len(FIGURES), figsize=(10, 4))
    for ax, (key, (name, scale, _)) in zip(axes, FIGURES.items()):
        for fold, points in sorted(curve(rows, key).items()):
            line, = ax.plot([n for n, _ in points], [v * scale for _, v in points], "o-", label=f"held out {fold}")
            mine = [r for r in rows if r["fold"] == fold and r.get(key) is not None]
            ax.scatter([r["train_crops"] for r in mine], [r[key] * scale for r in mine], s=12, color=line.get_color(),
                       alpha=0.4)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training lesions")
        ax.set_title(name)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="crop_cv.py output folders, one per training-set size")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--arms", nargs="+", default=["geometry", "geometry-seed-43"],
                        help="the replicates (seeds) averaged at each size")
    parser.add_argument("--folds", nargs="+", default=["fold4", "fold3"], help="the held-out folds read")
    args = parser.parse_args(argv)
    rows = read_rows(args.runs, args.arms, args.folds)
    if not rows:
        parser.error(f"no rows of {args.arms} held out on {args.folds} in {[str(r) for r in args.runs]}")
    args.out.mkdir(parents=True, exist_ok=True)
    text = summary(rows)
    (args.out / "summary.md").write_text(text)
    plot(rows, args.out / "curve.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
