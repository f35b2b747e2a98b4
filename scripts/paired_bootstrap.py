"""How far a figure's difference between two evaluation reports of the same images could move by
which patients happened to be drawn: a paired bootstrap over patients (docs/results.md item 72).
Runs no model; reads each report's kept detections, as served (``lesion_rank.py`` reads them so).

Each resample draws the reports' patients with replacement and scores both reports on the same
draw, so what the two share (the images) cancels and what differs (the models) remains. The
interval is the 2.5th to 97.5th percentile of B - A over the resamples; a difference whose
interval holds 0 is one these images cannot tell from chance in which of them were drawn. It says
nothing of the training's own variation (one run each).

    python scripts/paired_bootstrap.py A B [--resamples 400] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from model.category_reading import SERVED_READING as SERVED_CATEGORIES  # noqa: E402
from model.evaluation.report import read_metrics, read_served_detections  # noqa: E402
from model.records import Detection, ImageRecord  # noqa: E402
from scripts.classifier_naming import figures, scoring  # noqa: E402

FIGURES = ("ap50_lesion", "top_box_on_lesion", "accuracy", "auc", "effort_ratio",
           "table_ii_sen", "table_ii_spe", "table_ii_balanced")


def as_served(report: Path) -> dict[str, tuple[ImageRecord, Detection]]:
    """The report's records and detections by image, each P(malignant) read as served; a report
    whose categories were read otherwise (or voted) cannot be re-read here, nor one naming an image twice."""
    readings = read_metrics(report).get("readings", {})
    if readings.get("category", SERVED_CATEGORIES) != SERVED_CATEGORIES or readings.get("category_voting"):
        raise SystemExit(f"{report}: its categories were read as {readings}, not as served")
    pairs = read_served_detections(report)
    by_image = {record.image_id: (record, detection) for record, detection in pairs}
    if len(by_image) != len(pairs):
        raise SystemExit(f"{report}: {len(pairs) - len(by_image)} images named twice")
    return by_image


def by_patient(records: list[ImageRecord]) -> dict[str, list[str]]:
    """Each patient's image ids (an image without a patient is its own)."""
    patients: dict[str, list[str]] = defaultdict(list)
    for record in records:
        patients[record.patient or record.image_id].append(record.image_id)
    return dict(patients)


def resample(patients: dict[str, list[str]], rng: random.Random) -> list[tuple[str, str]]:
    """(image id, its name in the draw): patients drawn with replacement, each draw's copies of an
    image named apart (evaluation keys images by id)."""
    drawn = rng.choices(sorted(patients), k=len(patients))
    return [(image, f"{image}#{n}") for n, patient in enumerate(drawn) for image in patients[patient]]


def scored_on(draw: list[tuple[str, str]], pairs: dict, scored: dict) -> dict[str, float | None]:
    records = [replace(pairs[image][0], image_id=name) for image, name in draw]
    return figures(records, [pairs[image][1] for image, _ in draw], scored)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


def compare(first: Path, second: Path, resamples: int, seed: int) -> dict[str, dict]:
    """Each figure: A, B, B - A, and the bootstrap's 95 % interval of B - A."""
    a, b = as_served(first), as_served(second)
    if a.keys() != b.keys():
        raise SystemExit(f"the reports hold different images ({len(a.keys() ^ b.keys())} in one only)")
    scored_a, scored_b = scoring(first), scoring(second)
    whole = [(image, image) for image in a]
    full_a, full_b = scored_on(whole, a, scored_a), scored_on(whole, b, scored_b)
    patients, rng = by_patient([record for record, _ in a.values()]), random.Random(seed)
    deltas: dict[str, list[float]] = defaultdict(list)
    for _ in range(resamples):
        draw = resample(patients, rng)
        one, two = scored_on(draw, a, scored_a), scored_on(draw, b, scored_b)
        for name in FIGURES:
            if one[name] is not None and two[name] is not None:
                deltas[name].append(two[name] - one[name])
    return {name: {"a": full_a[name], "b": full_b[name],
                   "delta": None if full_a[name] is None or full_b[name] is None else full_b[name] - full_a[name],
                   "low": percentile(deltas[name], 0.025) if deltas[name] else None,
                   "high": percentile(deltas[name], 0.975) if deltas[name] else None,
                   "resamples": len(deltas[name])} for name in FIGURES}


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.4f}" if value < 0 else f"{value:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="report A (the baseline)")
    parser.add_argument("second", type=Path, help="report B (the lever)")
    parser.add_argument("--resamples", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = compare(args.first, args.second, args.resamples, args.seed)
    rows = [[name, _cell(r["a"]), _cell(r["b"]), _cell(r["delta"]), f"[{_cell(r['low'])}, {_cell(r['high'])}]"]
            for name, r in result.items()]
    print(tabulate(rows, ["figure", "A", "B", "B - A", "95 % interval of B - A"], tablefmt="github"))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
