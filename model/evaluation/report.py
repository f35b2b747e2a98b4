"""Write an evaluation: metrics.json, report.md, a confusion-matrix PNG, example images and each
image's detection (detections.jsonl, with its expert record)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from model.evaluation.effort import RATIO_AT_DRAW_ENDS  # noqa: E402
from model.evaluation.evaluate import Evaluation  # noqa: E402
from model.evaluation.metrics import NEAR_IOU  # noqa: E402
from model.evaluation.screening_cut import fitted_on  # noqa: E402
from model.io import StagedDirectory, read_image  # noqa: E402
from model.malignancy_reading import SERVED_READING, reread  # noqa: E402
from model.records import MATCH_IOU, Detection, ImageRecord  # noqa: E402
from model.subcategory import MIN_IOU as SUBCATEGORY_MIN_IOU  # noqa: E402

DETECTIONS = "detections.jsonl"
PAPER_TABLE_III_PICTURE = "confusion_matrix_4abc_paper.png"
METRICS = "metrics.json"
PAPER = {  # Wang et al., Tables II and III
    "screening_paper": {"accuracy": 0.9810, "sensitivity": 0.9778, "specificity": 0.9813},
    "4A_vs_4B": {"accuracy": 0.9237, "sensitivity": 0.9834, "specificity": 0.8246},
}


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def plot_confusion(matrix: list[list[int]], labels: list[str], path: Path, title: str) -> None:
    data = np.asarray(matrix)
    figure, axes = plt.subplots(figsize=(1.0 + 0.8 * len(labels), 0.8 + 0.8 * len(labels)))
    axes.imshow(data, cmap="Blues")
    for (row, col), count in np.ndenumerate(data):
        axes.text(col, row, str(count), ha="center", va="center",
                  color="white" if count > data.max() / 2 else "black")
    axes.set_xticks(range(len(labels)), [f"BI-RADS {x}" for x in labels], rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), [f"BI-RADS {x}" for x in labels])
    axes.set_xlabel("model")
    axes.set_ylabel("experts")
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _one_of_each(records, count: int) -> list[int]:
    """Up to ``count`` indices taking the experts' categories in turn (in data order within each)."""
    queues: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        queues.setdefault(record.birads or "", []).append(index)
    chosen: list[int] = []
    while len(chosen) < count and any(queues.values()):
        for category in sorted(queues):
            if queues[category] and len(chosen) < count:
                chosen.append(queues[category].pop(0))
    return chosen


def plot_examples(evaluation: Evaluation, path: Path, score_threshold: float, count: int = 8,
                  decision: str = "shown") -> None:
    """Expert boxes (green) and the model's shown boxes (red, with category and score); under the
    "top" decision also the most confident box, whatever its score. Images of each expert category
    in turn, so that one picture shows every category the data has."""
    pairs = [(evaluation.records[i], evaluation.detections[i]) for i in _one_of_each(evaluation.records, count)]
    columns = min(4, len(pairs))
    rows = -(-len(pairs) // columns)
    figure, axes_grid = plt.subplots(rows, columns, figsize=(4 * columns, 4 * rows), squeeze=False)
    for axes in axes_grid.flat:
        axes.axis("off")
    for axes, (record, detection) in zip(axes_grid.flat, pairs):
        axes.imshow(read_image(record.path))
        for box in record.boxes:
            axes.add_patch(plt.Rectangle((box.x0, box.y0), box.width, box.height, fill=False,
                                         edgecolor="lime", linewidth=2))
        top = detection.top()
        for box in detection.boxes:
            if (box.score or 0) < score_threshold and not (decision == "top" and box is top):
                continue
            axes.add_patch(plt.Rectangle((box.x0, box.y0), box.width, box.height, fill=False,
                                         edgecolor="red", linewidth=1.5))
            axes.text(box.x0, box.y0, f"{box.category} {box.score:.2f}", color="red", fontsize=8,
                      va="bottom", backgroundcolor=(1, 1, 1, 0.6))
        axes.set_title(f"{record.image_id} (experts: {record.birads})", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


DECISION_TEXT = {
    "shown": "Image-level category: the most suspicious box shown to the annotator (the acceptance rate's "
             "display); BI-RADS 1 when none.",
    "top": "Image-level category: the most confident box at any score down to 0.05 (the paper's per-lesion "
           "classification; every image is assumed to hold a lesion).",
}


def _binary_row(name: str, stats: dict | None, paper: dict | None = None) -> str:
    if not stats:
        return f"| {name} | n/a | n/a | n/a | | |"
    row = (f"| {name} | {pct(stats['accuracy'])} | {pct(stats['sensitivity'])} | "
           f"{pct(stats['specificity'])} | {stats['tp']}/{stats['fn']}/{stats['fp']}/{stats['tn']} |")
    if paper:
        row += f" {pct(paper['accuracy'])} / {pct(paper['sensitivity'])} / {pct(paper['specificity'])} |"
    else:
        row += " |"
    return row


def _at_cut_row(at_cut: dict | None) -> list[str]:
    if not at_cut:
        return []
    return [_binary_row(f"the same images, BI-RADS 5 where P(5) >= {at_cut['cut']:.3f} (the cut "
                        f"`birads fit-cuts` fitted on {fitted_on(at_cut)})", at_cut)]


def _classes_text(m: dict) -> str:
    """The model's classes, and the ones its boxes were scored on where those differ."""
    own = m.get("model_classes", m["classes"])
    text = f"model classes {', '.join(own)}"
    return text if own == m["classes"] else f"{text} (scored on {', '.join(m['classes'])})"


def _table_ii_name(classes: list[str]) -> str:
    if any(c.startswith("4") for c in classes):
        return ("BI-RADS 5 vs 1-3, experts' labels; this model's 4 counts as positive (the paper's "
                "Table II uses its second model, trained without 4)")
    return "BI-RADS 5 vs 1-3, experts' labels, a model without BI-RADS 4 (paper Table II, its protocol)"


def effort_lines(e: dict | None) -> list[str]:
    if not e:
        return []
    lines = ["", "## Expert effort (seconds per image)", "",
             f"Action costs (s): {', '.join(f'{k} {v:g}' for k, v in e['costs'].items())} "
             "(sources in `model/evaluation/effort.py`). By hand: every lesion drawn; with the model: "
             "every shown box verified, then fixed. Reading the image and the BI-RADS judgement are "
             "counted on neither side.", "",
             "| shown to the expert | with model | by hand | ratio | "
             + " | ".join(f"ratio, draw {d:g} s" for d in RATIO_AT_DRAW_ENDS) + " |",
             "|---|---|---|---|" + "---|" * len(RATIO_AT_DRAW_ENDS)]
    for display, d in e["displays"].items():
        mark = " (cheapest)" if display == e["best_display"] else ""
        ratios = " | ".join("n/a" if d[k] is None else f"{d[k]:.2f}" for k in ("ratio", *RATIO_AT_DRAW_ENDS.values()))
        lines.append(f"| {DISPLAY_TEXT[display]}{mark} | {d['seconds_per_image']:.1f} | "
                     f"{d['by_hand_seconds_per_image']:.1f} | {ratios} |")
    return lines


DISPLAY_TEXT = {"threshold": "boxes at score >= threshold", "top1": "the most confident box too",
                "top1-only": "only the most confident box"}


def _top_box_line(top: dict | None) -> list[str]:
    if not top or not top["images"]:
        return []
    return [f"- The most confident box, on the {top['images']} images with a lesion: on a lesion "
            f"(IoU >= {MATCH_IOU}) {pct(top['on_lesion'])}, near one (IoU {NEAR_IOU}-{MATCH_IOU}) "
            f"{pct(top['near'])}, elsewhere or none {pct(top['elsewhere'])}; median IoU {top['median_iou']:.2f}"]


def _kappa_text(kappa: float | None) -> str:
    if kappa is None:
        return ""
    return (f"; Cohen's kappa against the experts {kappa:.3f} (two radiologists on the same breast "
            "ultrasound images: 0.30-0.51, docs/results.md item 24)")


def _by_place_line(by_place: dict | None) -> list[str]:
    if not by_place or not by_place["on_lesion"]["images"]:
        return []
    parts = [f"{by_place[k]['images']} images {where}: category accuracy "
             f"{pct(by_place[k]['category_accuracy'])}, AUC against pathology {number(by_place[k]['auc'])}"
             for k, where in (("on_lesion", "with it on a lesion"), ("off_lesion", "with it elsewhere"))]
    return [f"- By that box's place: {'; '.join(parts)}"]


def markdown(m: dict, model_dir: str, data: str) -> str:
    lines = [f"# Evaluation of `{model_dir}` on `{data}`", "",
             f"{m['n_images']} images; {_classes_text(m)}; a box is shown at "
             f"score >= {m['score_threshold']}; biopsy recommended at BI-RADS >= {m['biopsy_threshold']}.",
             "", DECISION_TEXT[m.get("decision", "shown")],
             "", "## Detection", "",
             f"- COCO box AP {m['ap']:.3f}, AP50 {m['ap50']:.3f} (per category); "
             f"lesion AP50 (any category) {m['ap50_lesion']:.3f}",
             *_top_box_line(m.get("top_box")),
             *_by_place_line(m.get("by_top_box_place")),
             f"- Acceptance rate (pre-annotation accepted unchanged, {DISPLAY_TEXT[m.get('display', 'threshold')]} "
             f"shown): {pct(m['acceptance_rate'])}",
             f"- Image-level category accuracy: {pct(m['category_accuracy'])}"
             f"{_kappa_text(m.get('category_kappa'))}", "",
             "## Per category, one vs rest (paper Table I)", "",
             "| BI-RADS | accuracy | sensitivity | specificity | support |", "|---|---|---|---|---|"]
    for category, s in m["per_category"].items():
        lines.append(f"| {category} | {pct(s['accuracy'])} | {pct(s['sensitivity'])} | "
                     f"{pct(s['specificity'])} | {s['support']} |")
    lines += ["", "![confusion matrix](confusion_matrix.png)", "",
              "## Screening", "",
              "| | accuracy | sensitivity | specificity | TP/FN/FP/TN | paper (ACC / SEN / SPE) |",
              "|---|---|---|---|---|---|",
              _binary_row(_table_ii_name(m.get("model_classes", m["classes"])), m["screening_paper"],
                          PAPER["screening_paper"]),
              *_at_cut_row(m["screening_paper"].get("at_cut")),
              _binary_row("malignant vs benign, pathology: model", m.get("screening")),
              _binary_row("malignant vs benign, pathology: experts' BI-RADS", m.get("screening_experts"))]
    if m["screening_paper"].get("auc") is not None:
        lines += ["", f"Table II AUC (the same images ranked by the model's probability of BI-RADS >= "
                  f"{m['biopsy_threshold']}): {number(m['screening_paper']['auc'])}"]
    if m.get("screening"):
        auc, by_categories = m["screening"]["auc"], m["screening"].get("auc_categories")
        lines += ["", f"Screening AUC (model, against pathology): {number(auc)}; ranked by the "
                  f"detector's class scores alone (any box's highest P(BI-RADS >= {m['biopsy_threshold']})): "
                  f"{number(by_categories)}"]
    if "subcategories" in m:
        sub = m["subcategories"]
        lines += ["", "## BI-RADS 4A vs 4B (paper Table III)", "",
                  "| | accuracy | sensitivity | specificity | TP/FN/FP/TN | paper |", "|---|---|---|---|---|---|",
                  _binary_row("model: 4B or above vs 4A, experts' subcategory", sub["4A_vs_4B"],
                              PAPER["4A_vs_4B"]),
                  _binary_row("model: 4B or above vs 4A, pathology", sub.get("4A_vs_4B_pathology")),
                  _binary_row("experts' 4B or above vs 4A, pathology", sub.get("experts_4A_vs_4B_pathology")),
                  "", f"{sub['predicted_outside_4']} of these images were called outside BI-RADS 4 "
                  "(counted by rank: 1-3, and a 4 left unsplit, as below 4B; 5 as 4B or above).", "",
                  "![4A/4B/4C confusion](confusion_matrix_4abc.png)"]
    if "subcategories_paper" in m:
        lines += paper_table_iii_lines(m["subcategories_paper"])
    lines += effort_lines(m.get("effort"))
    lines += ["", "## Examples (green: experts, red: model)", "", "![examples](examples.png)", ""]
    return "\n".join(lines)


def paper_table_iii_lines(sub: dict) -> list[str]:
    """Table III the paper's way: this second model on every lesion the experts put in 4A/4B/4C."""
    low, high = sub["cuts"]
    return ["", "## BI-RADS 4A vs 4B the paper's way (Table III: this model on the experts' 4A/4B/4C lesions)",
            "", "| | accuracy | sensitivity | specificity | TP/FN/FP/TN | paper |", "|---|---|---|---|---|---|",
            _binary_row("4B or above vs 4A, experts' subcategory", sub["4A_vs_4B"], PAPER["4A_vs_4B"]),
            _binary_row("4B or above vs 4A, pathology", sub.get("4A_vs_4B_pathology")),
            "", f"{sub['lesions']} lesions; {sub['not_found']} with no box of this model on them (IoU < "
            f"{SUBCATEGORY_MIN_IOU}), left out above. Cuts: 4A below {low:.3f}, 4C from {high:.3f}.",
            "", f"![4A/4B/4C the paper's way (rows: experts)]({PAPER_TABLE_III_PICTURE})"]


def read_detections(report: str | Path) -> list[tuple[ImageRecord, Detection]]:
    """Each image's expert record and the model's detection, as a report kept them (for analyses
    that need no second pass of the model); gzipped as docs/results keeps them, or not."""
    plain = Path(report) / DETECTIONS
    packed = plain.with_name(plain.name + ".gz")
    lines = (plain.read_text() if plain.is_file() or not packed.is_file()
             else gzip.decompress(packed.read_bytes()).decode()).splitlines()
    return [(ImageRecord.from_dict(row["record"]), Detection.from_dict(row["detection"]))
            for row in map(json.loads, lines)]


def read_metrics(report: str | Path) -> dict:
    """A report directory's metrics (what ``write_report`` wrote to its METRICS)."""
    return json.loads((Path(report) / METRICS).read_text())


def scored_classes(report: str | Path) -> list[str]:
    """The classes a report's images were scored on (its kept detections' categories roll up to them)."""
    return read_metrics(report)["classes"]


def malignancy_read_as(report: str | Path) -> str:
    """The malignancy reading a report's kept detections carry (``model.malignancy_reading``);
    reports written before it was recorded read the box classifier's pathology head alone."""
    return read_metrics(report).get("readings", {}).get("malignancy", "pathology")


def read_served_detections(report: str | Path) -> list[tuple[ImageRecord, Detection]]:
    """A report's kept detections with each P(malignant) read as served, whichever reading it kept."""
    pairs = read_detections(report)
    if malignancy_read_as(report) == SERVED_READING:
        return pairs
    return [(record, reread(detection, SERVED_READING)) for record, detection in pairs]


def write_report(evaluation: Evaluation, out: str | Path, model_dir: str, data: str) -> Path:
    """Write the report directory ``out`` (replaced as a whole, never half-written)."""
    m = evaluation.metrics
    with StagedDirectory(out) as staging:
        (staging / METRICS).write_text(json.dumps(m, indent=1))
        (staging / DETECTIONS).write_text("".join(
            json.dumps({"record": r.to_dict(), "detection": d.to_dict()}, default=float) + "\n"
            for r, d in zip(evaluation.records, evaluation.detections)))
        plot_confusion(m["confusion_matrix"]["matrix"], m["confusion_matrix"]["labels"],
                       staging / "confusion_matrix.png", "Image-level BI-RADS")
        if "subcategories" in m:
            sub = m["subcategories"]
            plot_confusion(sub["confusion_matrix"], sub["labels"],
                           staging / "confusion_matrix_4abc.png", "BI-RADS 4 subcategories")
        if "subcategories_paper" in m:
            sub = m["subcategories_paper"]
            plot_confusion(sub["confusion_matrix"], sub["labels"], staging / PAPER_TABLE_III_PICTURE,
                           "4A/4B/4C, the paper's way")
        plot_examples(evaluation, staging / "examples.png", m["score_threshold"],
                      decision=m.get("decision", "shown"))
        (staging / "report.md").write_text(markdown(m, model_dir, data))
    return Path(out)
