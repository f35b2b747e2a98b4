"""Table III the paper's way, re-read on kept reference runs: the second model (trained without
BI-RADS 4) reads every lesion the experts put in 4A/4B/4C, at the cuts fitted for it on BrEaST
part1, beside Table III as the runs reported it (the first model's BI-RADS 4 boxes split, each
image read by its top box). Runs no model.

    python scripts/table_iii_paper.py [--pictures DIR] RUNS [RUNS...]

With ``--pictures``, each run's paper's-way confusion matrix is drawn into DIR (named after the
run's folder above ``runs``).

A RUNS folder is a reference run's (``scripts/reference_model.sh``'s ``$out``, as kept under
docs/results/*/runs): ``model-no4-breast`` (the second model's BrEaST part2 report, its
detections gzipped or not), ``subcategory_cuts.json`` and ``split-breast``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from model.evaluation.evaluate import subcategories_paper  # noqa: E402
from model.evaluation.report import plot_confusion, read_detections, read_metrics  # noqa: E402


def figures(runs: Path) -> dict:
    pairs = read_detections(runs / "model-no4-breast")
    cuts = tuple(json.loads((runs / "subcategory_cuts.json").read_text())["cuts"])
    paper = subcategories_paper([r for r, _ in pairs], [d for _, d in pairs], cuts)
    as_run = read_metrics(runs / "split-breast").get("subcategories") or {}
    return {"paper's way": paper or {}, "as run": as_run}


def _row(runs: Path, arm: str, table: dict) -> list:
    binary = table.get("4A_vs_4B") or {}
    counts = "/".join(str(binary.get(k, "-")) for k in ("tp", "fn", "fp", "tn"))
    left = table.get("not_found", table.get("predicted_outside_4"))
    return [str(runs), arm, *(f"{100 * binary[k]:.2f}" if binary.get(k) is not None else "n/a"
                              for k in ("accuracy", "sensitivity", "specificity")), counts, left]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--pictures", type=Path, help="draw each run's paper's-way confusion matrix here")
    args = parser.parse_args(argv)
    results = {str(runs): figures(runs) for runs in args.runs}
    for runs in args.runs if args.pictures else []:
        paper = results[str(runs)]["paper's way"]
        if paper:
            args.pictures.mkdir(parents=True, exist_ok=True)
            plot_confusion(paper["confusion_matrix"], paper["labels"],
                           args.pictures / f"{runs.resolve().parent.name}.png", "4A/4B/4C, the paper's way")
    rows = [_row(runs, arm, results[str(runs)][arm]) for runs in args.runs for arm in ("as run", "paper's way")]
    print(tabulate(rows, ["runs", "Table III", "accuracy %", "sensitivity %", "specificity %", "TP/FN/FP/TN",
                          "left out (as run: called outside 4; paper's way: no box on the lesion)"],
                   tablefmt="github"))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
