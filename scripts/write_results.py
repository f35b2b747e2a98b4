"""Assemble docs/results.md (and its PNGs) from the runs of the three experiment scripts.

    python scripts/write_results.py [RUNS_DIR]        (default runs/)
    python scripts/write_results.py RUNS_DIR --doc DIR/results.md --pictures DIR/results
                                                      (a run's own document beside docs/results.md)

Reads scripts/reference_model.sh's, subcategory_comparison.sh's, simulation.sh's,
box_classifier_experiment.sh's and ablation.sh's outputs and their start/end stamps; every number
in the document comes from those files. The hand-written discussion (from the heading DISCUSSION
on) of an existing docs/results.md is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from model.config import cpu_name  # noqa: E402
from model.evaluation.evaluate import shown_text  # noqa: E402
from model.evaluation.report import DECISION_TEXT, PAPER, PAPER_TABLE_III_PICTURE, effort_lines, number, pct  # noqa: E402
from model.evaluation.screening_cut import fitted_on  # noqa: E402
from model.modeldir import BOX_CLASSIFIER_META  # noqa: E402
from model.simulation import ROUND_COLUMNS, gate_text, schedule_text  # noqa: E402
from model.simulation import _fmt as cell  # noqa: E402

DOC = REPO / "docs" / "results.md"
PICTURES = REPO / "docs" / "results"
DISCUSSION = "## Where and why we fall short of the paper"


def row(name: str, stats: dict | None, extra: str = "") -> str:
    if not stats:
        return f"| {name} | n/a | n/a | n/a | | {extra} |"
    return (f"| {name} | {pct(stats['accuracy'])} | {pct(stats['sensitivity'])} | {pct(stats['specificity'])} "
            f"| {stats['tp']}/{stats['fn']}/{stats['fp']}/{stats['tn']} | {extra} |")


def paper_row(name: str, key: str) -> str:
    p = PAPER[key]
    return f"| {name} | {pct(p['accuracy'])} | {pct(p['sensitivity'])} | {pct(p['specificity'])} | | |"


def seconds(folder: Path, name: str) -> int | None:
    """Wall time from a script's ``name.start`` / ``name.end`` stamps in ``folder``; None if missing."""
    try:
        start, end = (int((folder / f"{name}.{x}").read_text()) for x in ("start", "end"))
    except (FileNotFoundError, ValueError):
        return None
    return end - start


def minutes(runs: Path, name: str) -> str:
    wall = seconds(runs, name)
    return "not recorded" if wall is None else f"{wall / 60:.0f} min"


class Pictures(NamedTuple):
    """Where a document's pictures go (``folder``), linked from ``document`` relative to its folder."""

    folder: Path
    document: Path

    def link(self, name: str) -> str:
        return Path(os.path.relpath(self.folder / name, self.document.parent)).as_posix()

    def copy(self, source: Path, name: str) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, self.folder / name)
        return self.link(name)

    def save(self, figure, name: str) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        figure.savefig(self.folder / name, dpi=110)
        return self.link(name)


def auc_cell(stats: dict | None) -> str:
    """A screening's AUC for a table cell (empty where the run did not record one)."""
    auc = (stats or {}).get("auc")
    return "" if auc is None else f"{auc:.3f}"


def _kappa(kappa: float | None) -> str:
    return "" if kappa is None else f" (Cohen's kappa against the experts {kappa:.3f})"


def evaluation_section(title: str, report: Path, prefix: str, pictures: Pictures) -> list[str]:
    m = json.loads((report / "metrics.json").read_text())
    matrix = pictures.copy(report / "confusion_matrix.png", f"{prefix}_confusion_matrix.png")
    examples = pictures.copy(report / "examples.png", f"{prefix}_examples.png")
    lines = [f"## {title}: {m['n_images']} images", "",
             f"COCO box AP {m['ap']:.3f}, AP50 {m['ap50']:.3f} over the BI-RADS classes; lesion AP50 "
             f"(any category) {m['ap50_lesion']:.3f}; image-level BI-RADS accuracy {pct(m['category_accuracy'])}"
             f"{_kappa(m.get('category_kappa'))}; "
             f"acceptance rate (pre-annotation at score >= {m['score_threshold']} "
             f"accepted unchanged) {pct(m['acceptance_rate'])}. {DECISION_TEXT[m['decision']]}", "",
             "Per category, one vs rest (the paper's Table I form):", "",
             "| BI-RADS | accuracy | sensitivity | specificity | support |", "|---|---|---|---|---|"]
    lines += [f"| {c} | {pct(s['accuracy'])} | {pct(s['sensitivity'])} | {pct(s['specificity'])} | {s['support']} |"
              for c, s in m["per_category"].items()]
    lines += ["", "| screening | accuracy | sensitivity | specificity | TP/FN/FP/TN | AUC |",
              "|---|---|---|---|---|---|",
              paper_row("paper, Table II (BI-RADS 5 vs 1-3, its own test set)", "screening_paper"),
              row("this model, experts' BI-RADS 5 vs 1-3, its 4 counted positive", m["screening_paper"],
                  auc_cell(m["screening_paper"])),
              row("ours vs pathology (predicted >= 4 = malignant)", m.get("screening"), auc_cell(m.get("screening"))),
              row("experts' own BI-RADS >= 4 vs pathology", m.get("screening_experts")), "",
              f"![confusion matrix]({matrix})", "", f"![examples: experts green, model red]({examples})"]
    return lines + effort_lines(m.get("effort"))[1:] + [""]


def subcategory_section(runs: Path, pictures: Pictures) -> list[str]:
    base = runs / "subcategories"
    arms = {"two models (paper)": base / "two-models-report", "direct 4A/4B/4C model": base / "direct-report"}
    if not all((p / "metrics.json").is_file() for p in arms.values()):
        return []
    cuts = json.loads((base / "without4" / "subcategory_cuts.json").read_text())
    subs = {name: json.loads((p / "metrics.json").read_text()).get("subcategories") for name, p in arms.items()}
    n = json.loads((base / "direct-report" / "metrics.json").read_text())["n_images"]
    tuned = json.loads((base / "direct" / "model.json").read_text())["settings"]
    lines = ["## BI-RADS 4 -> 4A / 4B / 4C on BrEaST (the paper's Table III)", "",
             f"`scripts/subcategory_comparison.sh` ({minutes(runs, 'subcategories')}): every model starts from the "
             f"reference model and is fine-tuned on BrEaST part1 ({tuned['max_iter']} iterations, "
             f"{tuned['image_size']} px); all are tested on "
             f"part2 ({n} images). Two models: a first model on part1 with 4A/4B/4C read as 4, and the paper's "
             "second model trained on part1 without BI-RADS 4 images; its likeness P(5) / (P(2) + P(3) + P(5)) "
             f"is cut at {cuts['cuts'][0]:.3f} / {cuts['cuts'][1]:.3f}, fitted on part1's "
             f"{cuts['lesions']} BI-RADS 4 lesions ({cuts['right']} sorted right there). Direct: one model "
             "fine-tuned on part1's 4A/4B/4C labels. Positive: 4B or above; the image's category is its "
             "most confident box (1-3, and a 4 left unsplit, count as below 4B; 5 as above).", "",
             "| 4B or above vs 4A | accuracy | sensitivity | specificity | TP/FN/FP/TN | images called outside 4 |",
             "|---|---|---|---|---|---|", paper_row("paper, Table III (4A vs 4B, its test set)", "4A_vs_4B")]
    for name, sub in subs.items():
        lines.append(row(f"{name}, against the experts' subcategory", sub and sub["4A_vs_4B"],
                         str(sub["predicted_outside_4"]) if sub else ""))
    for name, sub in subs.items():
        lines.append(row(f"{name}, against pathology", sub and sub.get("4A_vs_4B_pathology")))
    experts = next((s["experts_4A_vs_4B_pathology"] for s in subs.values() if s), None)
    lines += [row("experts' own 4B or above, against pathology", experts), ""]
    for name, path in arms.items():
        picture = path / "confusion_matrix_4abc.png"
        if picture.is_file():
            lines += [f"{name}: ![4A/4B/4C confusion]({pictures.copy(picture, path.name + '_4abc.png')})", ""]
    return lines


def simulation_plot(results: dict[str, dict], pictures: Pictures) -> str:
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for order, result in results.items():
        done = [r for r in result["rounds"] if r["corrections_per_image"] is not None]
        left.plot([r["round"] for r in done], [r["seconds_per_image"] for r in done], "o-",
                  label=f"pre-annotated, {order} order")
        right.plot([r["train_images"] for r in result["rounds"]], [r["ap50_lesion"] for r in result["rounds"]],
                   "o-", label=f"lesion AP50, {order}")
        right.plot([r["train_images"] for r in result["rounds"]], [r["ap50"] for r in result["rounds"]],
                   "s--", label=f"BI-RADS AP50, {order}")
    order, baseline = next(iter(results.items()))
    done = [r for r in baseline["rounds"] if r["corrections_per_image"] is not None]
    left.plot([r["round"] for r in done], [r["by_hand_seconds_per_image"] for r in done], "k:",
              label=f"drawn by hand ({order} order)")
    left.set_xticks([r["round"] for r in done])
    left.set_xlabel("round")
    left.set_ylabel("expert-seconds per image")
    left.legend(fontsize=8)
    right.set_xlabel("expert-labelled BrEaST images")
    right.set_ylabel("held-out AP50 (BrEaST part2)")
    right.legend(fontsize=8)
    figure.tight_layout()
    link = pictures.save(figure, "simulation.png")
    plt.close(figure)
    return link


def _size(train: dict) -> str:
    if not train["image_size"]:
        return "at the reference model's own size"
    return f"{train['image_size']} px"


def simulation_section(runs: Path, pictures: Pictures) -> list[str]:
    results = {order: json.loads(p.read_text()) for order in ("random", "uncertain")
               if (p := runs / "simulation" / order / "simulation.json").is_file()}
    if not results:
        return []
    s = next(iter(results.values()))["settings"]
    # the columns its runs have (runs before item 38 replayed nothing and have no replay_images)
    keys = [k for k in ROUND_COLUMNS if any(k in r for result in results.values() for r in result["rounds"])]
    lines = ["## The labelling loop, simulated on real data", "",
             f"`scripts/simulation.sh` ({minutes(runs, 'simulation')} for {' and '.join(results)} order): "
             "the reference model "
             "(BUS-BRA) arrives at another hospital (BrEaST, read as BI-RADS 2/3/4/5). Experts label "
             f"{s['initial']} part1 images; the model is fine-tuned on them ({schedule_text(s)}, "
             f"{_size(s['train'])}); then each round it pre-annotates {s['round_size']} more "
             f"({shown_text(s.get('display', 'threshold'), s['score_threshold'])}), the simulated expert corrects "
             "them from the ground truth (each box added, deleted, moved at IoU < 0.5 or relabelled is one "
             "correction; expert-seconds from the action costs "
             f"{', '.join(f'{k} {v:g} s' for k, v in (s.get('costs') or {}).items())}), they join the training "
             f"set and a new version is fine-tuned from the served one ({gate_text(s)}); each round's served "
             "version is tested on part2. "
             "Hand-drawn baseline: every lesion drawn from nothing. Screening: "
             "the most confident box, against pathology. Why BrEaST and not BUS-BRA from scratch: on 2 CPU "
             "cores a model trained from nothing on a few dozen images finds no lesion, so every round would "
             "equal the hand-drawn baseline; starting from the reference model needs a pool it has not seen, "
             "and BUS-BRA's fourth fold is its test set. `birads simulate --data busbra:... --splits fold1 "
             "fold2 fold3 --holdout-splits fold4` runs the BUS-BRA form (CI runs it on a handful of images).",
             "",
             f"![simulation]({simulation_plot(results, pictures)})", ""]
    for order, result in results.items():
        lines += [f"{order} order:", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        for r in result["rounds"]:
            lines.append("| " + " | ".join(cell(r.get(k)) for k in keys) + " |")
        lines.append("")
    return lines


RECIPE = "reference"


STAGES = ("pretrain", "model", "model-no4", "classifier", "evaluations")
GN_HEADS = "MODEL.ROI_BOX_HEAD.NORM"  # in a model's `extra` overrides: the recipe's GroupNorm heads


def stage_minutes(runs: Path) -> dict[str, str]:
    """Minutes of each stage of scripts/reference_model.sh (its NAME.start/.end stamps), and their sum."""
    walls = {name: wall for name in STAGES if (wall := seconds(runs / RECIPE, name)) is not None}
    spans = {name: f"{wall / 60:.0f} min" for name, wall in walls.items()}
    if set(STAGES) - {"classifier"} <= set(walls):  # runs before the classifier stage had none
        spans["total"] = f"{sum(walls.values()) / 60:.0f} min"
    return spans


def classifier_meta(model: Path) -> dict | None:
    """A model directory's box classifier.json, None where it has no classifier."""
    meta = model / BOX_CLASSIFIER_META
    return json.loads(meta.read_text()) if meta.is_file() else None


def on_expert_boxes(info: dict) -> str:
    """A box classifier's own scores on fold 4's expert boxes (classifier.json's holdout)."""
    held = info.get("holdout") or {}
    return (f"On fold 4's expert boxes alone: BI-RADS accuracy {pct(held.get('birads_accuracy'))}, pathology AUC "
            f"{number(held.get('pathology_auc'))}.")


def recipe_classifier(model: Path, span: str) -> list[str]:
    """The recipe's box classifier stage, where its first model has one."""
    info = classifier_meta(model)
    if info is None:
        return []
    s = info["settings"]
    return [f"4. **The first model's box classifier** ({span}): a ResNet-18 (random weights) on each lesion's "
            f"crop ({s['context']}x context, {s['crop_size']} px) and background crops ({s['background_per_lesion']} "
            f"per lesion, {100 * s.get('misplaced_share', 0):.0f} % of them beside or around a lesion), "
            f"{s['epochs']} epochs on {info['train_boxes']} lesions; blend {s['blend']} (the detector names the "
            f"boxes), rescore {s.get('rescore', 0)}: its pathology head gives each box its P(malignant). "
            f"{on_expert_boxes(info)}"]


def header(runs: Path) -> list[str]:
    folder = runs / RECIPE
    info = json.loads((folder / "model" / "model.json").read_text())
    t = info["settings"]
    pre = json.loads((folder / "trunk" / "pretrain.json").read_text())
    p, held = pre["settings"], pre.get("holdout") or {}
    second = json.loads((folder / "model-no4" / "model.json").read_text())
    heads = ("GroupNorm FPN and a box head of four GroupNorm convolutions (`scripts/gn_heads.sh`)"
             if GN_HEADS in t.get("extra", []) else "detectron2's default FPN and box head")
    script = (REPO / "scripts" / "reference_model.sh").read_text()
    commands = script[script.index("iters=${ITERS"):].rstrip().splitlines()  # the schedule, then the stages
    spans = stage_minutes(runs)
    auc = held.get("pathology_auc")
    weight = p.get("ordinal_loss", 0.0)  # trunks pretrained before item 27 had none
    ordinal = f" (+ {weight} x the squared earth mover's distance in rank order)" if weight else ""
    return ["# Reference model and the paper's experiments, reproduced on these machines", "",
            "Every number below comes from `scripts/write_results.py` reading the outputs of the experiment "
            "scripts (`scripts/reference_model.sh`, and where present `scripts/box_classifier_experiment.sh`, "
            "`scripts/ablation.sh`, `scripts/subcategory_comparison.sh` and `scripts/simulation.sh`); weights stay "
            "in `runs/`, not in git.",
            "", f"Hardware: {cpu_name()}, {os.cpu_count()} cores ({platform.machine()}), CPU only.", "",
            "## Reference model: the CPU recipe", "", "```", *commands, "```", "",
            f"1. **In-domain pretraining** ({spans.get('pretrain', 'not recorded')}): the detector's own ResNet "
            f"trunk ({p['base_config']}, batch-norm) trained as a classifier of lesion crops with "
            f"{p['context']}x context at {p['crop_size']} px, plus background crops "
            f"({p['background_per_lesion']} per lesion), class-weighted BI-RADS head{ordinal} and pathology head, "
            f"flips/brightness/jitter, one-cycle SGD to {p['max_lr']}, {p['epochs']} epochs on "
            f"{pre['train_crops']} lesion crops of BUS-BRA folds 1-3. The crop classifier on fold 4's "
            f"{held.get('crops', 'n/a')} lesions: BI-RADS accuracy {pct(held.get('birads_accuracy'))}, "
            f"pathology AUC {number(auc)}.",
            f"2. **Faster R-CNN R101-FPN from that trunk** ({spans.get('model', 'not recorded')}): frozen "
            f"batch-norm, stem and res2 frozen (as with ImageNet weights), {info['data']['images']} training "
            f"images, classes {', '.join(info['classes'])}, near-native size (short side {t['image_size']} px, "
            f"long side at most {t['max_size']}), batch {t['batch_size']}, LR {t['base_lr']} dropped 10x at "
            f"{100 * t['lr_drop_at']:.0f} %, {t['max_iter']} iterations, rare categories repeated "
            f"(threshold {t['repeat_threshold']}), flips/rotation/brightness on the fly, "
            f"{'bf16 autocast' if t.get('bf16') else 'float32'}, {heads}.",
            f"3. **The paper's second model** ({spans.get('model-no4', 'not recorded')}): fine-tuned from the "
            f"first on the {second['data']['images']} training images without BI-RADS 4 (classes "
            f"{', '.join(second['classes'])}), {second['settings']['max_iter']} iterations.",
            *(classifier := recipe_classifier(folder / "model", spans.get("classifier", "not recorded"))),
            f"{5 if classifier else 4}. Evaluations, the 4A/4B/4C cuts and the Table II cut "
            f"({spans.get('evaluations', 'not recorded')}).", "",
            f"Wall time of the whole script (its stages added up): {spans.get('total', 'not recorded')}. "
            "Image-level figures take "
            "each image's most confident box (`--image-decision top`, the paper's per-lesion classification).",
            ""]


def read_metrics(report: Path) -> dict | None:
    """An evaluation report's metrics.json (``birads evaluate --out report``); None if missing."""
    path = report / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def metrics_of(runs: Path, name: str, experiment: str = RECIPE) -> dict | None:
    return read_metrics(runs / experiment / name)


def paper_protocol_section(runs: Path) -> list[str]:
    """Table II the paper's way (its second model, images without BI-RADS 4) beside the rest."""
    lines = ["## Screening the paper's way (Table II) and against pathology", "",
             "The paper's Table II comes from its second model (trained without BI-RADS 4) on images without "
             "BI-RADS 4: experts' BI-RADS 5 positive, 1-3 negative. Ours the same way, next to the first "
             "model's screening against pathology (biopsy or follow-up) and the experts' own BI-RADS >= 4.", "",
             "| | accuracy | sensitivity | specificity | TP/FN/FP/TN | AUC |", "|---|---|---|---|---|---|",
             paper_row("paper, Table II (second model, BI-RADS 5 vs 1-3)", "screening_paper")]
    for data, title in (("fold4", "BUS-BRA fold 4"), ("breast", "BrEaST part2")):
        second, first = metrics_of(runs, f"model-no4-{data}"), metrics_of(runs, f"model-{data}")
        if second:
            lines.append(row(f"ours, second model, {title} (BI-RADS 5 vs 1-3)", second["screening_paper"],
                             auc_cell(second["screening_paper"])))
            at_cut = second["screening_paper"].get("at_cut")
            if at_cut:
                lines.append(row(f"ours, second model, {title}, at P(5) >= {at_cut['cut']:.3f} (fitted on "
                                 f"{fitted_on(at_cut)})", at_cut))
        if first:
            lines += [row(f"ours, first model vs pathology, {title}", first.get("screening"),
                          auc_cell(first.get("screening"))),
                      row(f"experts' BI-RADS >= 4 vs pathology, {title}", first.get("screening_experts"))]
    return lines + [""]


def split_section(runs: Path, pictures: Pictures) -> list[str]:
    m = metrics_of(runs, "split-breast")
    sub = (m or {}).get("subcategories")
    if not sub:
        return []
    lines = ["## BI-RADS 4 -> 4A / 4B / 4C by the second model (Table III), BrEaST part2", "",
             "Every BrEaST part2 image the experts put in 4A, 4B or 4C, named by the first model and, where it "
             "said 4, split by the second model with cuts fitted on part1 (`birads fit-cuts`). Positive: 4B or "
             "above; an image the model called 2 or 3 counts as negative, 5 as positive (the last column "
             "counts them).", "",
             "| 4B or above vs 4A | accuracy | sensitivity | specificity | TP/FN/FP/TN | images called outside 4 |",
             "|---|---|---|---|---|---|", paper_row("paper, Table III (4A vs 4B, its test set)", "4A_vs_4B"),
             row("ours, against the experts' subcategory", sub["4A_vs_4B"], str(sub["predicted_outside_4"])),
             row("ours, against pathology", sub.get("4A_vs_4B_pathology")),
             row("experts' own 4B or above, against pathology", sub.get("experts_4A_vs_4B_pathology"))]
    paper = (metrics_of(runs, "model-no4-breast") or {}).get("subcategories_paper")
    if paper:  # the paper's protocol: the second model alone, on every lesion the experts call 4
        lines += [row("ours the paper's way (the second model on each expert 4A/4B/4C lesion), against the "
                      "experts' subcategory", paper["4A_vs_4B"], f"no box on {paper['not_found']}"),
                  row("ours the paper's way, against pathology", paper.get("4A_vs_4B_pathology"))]
    lines += [""]
    for report, name, title in (("split-breast/confusion_matrix_4abc.png", "split_4abc.png", "4A/4B/4C confusion"),
                                (f"model-no4-breast/{PAPER_TABLE_III_PICTURE}", "split_4abc_paper.png",
                                 "4A/4B/4C the paper's way")):
        if (runs / RECIPE / report).is_file():
            lines += [f"![{title}]({pictures.copy(runs / RECIPE / report, name)})", ""]
    return lines


def _lever_figures(m: dict | None, second: dict | None) -> dict[str, str]:
    """The figures a lever may move, from one model's and its second model's metrics (None: the
    second model's figures n/a)."""
    if not m:
        return {}
    effort = (m.get("effort") or {}).get("displays", {}).get("top1-only", {})
    paper = (second or {}).get("screening_paper") or {}
    auc, by_categories = ((m.get("screening") or {}).get(k) for k in ("auc", "auc_categories"))
    return {"lesion AP50": f"{m['ap50_lesion']:.3f}", "BI-RADS accuracy": pct(m["category_accuracy"]),
            "AUC against pathology": number(auc),
            "AUC against pathology, class scores alone": number(by_categories),
            "Table II sensitivity (second model)": pct(paper.get("sensitivity")),
            "Table II specificity (second model)": pct(paper.get("specificity")),
            "expert-seconds ratio, top1-only": "n/a" if "ratio" not in effort else f"{effort['ratio']:.2f}x"}


CLASSIFIER = "box-classifier"


def classifier_section(runs: Path) -> list[str]:
    """scripts/box_classifier_experiment.sh: the reference models with a box classifier each,
    beside the reference models alone (same detector weights, same images)."""
    folder = runs / CLASSIFIER
    info = classifier_meta(folder / "model")
    if info is None:
        return []
    s = info["settings"]
    columns = {}
    # since the recipe has a classifier of its own (blend 0: categories the detector's, not its AUC)
    reference = "reference" if classifier_meta(runs / RECIPE / "model") else "detector alone"
    for data, title in (("fold4", "BUS-BRA fold 4"), ("breast", "BrEaST part2")):
        pair = {f"{title}, {name}": _lever_figures(metrics_of(runs, f"model-{data}", experiment),
                                                    metrics_of(runs, f"model-no4-{data}", experiment))
                for name, experiment in ((reference, RECIPE), ("with box classifier", CLASSIFIER))}
        if all(pair.values()):  # a dataset only where both sides were evaluated
            columns |= pair
    names = list(next(iter(columns.values()), {}))
    return ["## The box classifier: what it changes", "",
            f"`scripts/box_classifier_experiment.sh`: a ResNet-18 (random weights) on each box's crop "
            f"({s['context']}x context, {s['crop_size']} px), {s['epochs']} epochs on the {info['train_boxes']} "
            f"lesions of the first model's training images ({minutes(folder, 'classifier-model')}), blended "
            f"with the detector at weight {s['blend']} (`model/box_classifier.py`); the second model's the "
            f"same on its own images ({minutes(folder, 'classifier-model-no4')}). {on_expert_boxes(info)} "
            "Below, the reference models alone and with their classifiers (same detector weights, same images):",
            "",
            "| | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns),
            *(f"| {n} | " + " | ".join(c.get(n, "n/a") for c in columns.values()) + " |" for n in names), ""]


ABLATION = "ablation"
# Arms' reports (no weights) kept in docs/results, since runs/ does not outlive a machine: folder ->
# (section title, the command that ran them)
KEPT_ABLATIONS = {
    "gpu-h200-ablation": ("One lever at a time on a GPU (first model)",
                          "`scripts/device_ablation.sh` (arms side by side on one card)"),
    "cpu-zen5-ablation": ("One lever at a time on an AMD EPYC (first model)", "`scripts/ablation.sh ARM...`"),
    "cpu-xeon-ablation": ("One lever at a time on an Intel Xeon with AMX (first model)",
                          "`scripts/ablation.sh ARM...`"),
}
ARMS = {"recipe": "the recipe's first model, unchanged", "seed-2": "the recipe with another seed",
        "frozen-res4": "res3 and res4 frozen too", "no-balance": "no class-balanced sampling",
        "size-512": "short side 512 px, long at most 800",
        "no-pretrain": "from scratch (GroupNorm), no pretrained trunk",
        "giou": "box head regressed with the generalized-IoU loss, weight 10",
        "gn-heads": "GroupNorm FPN and four-convolution GroupNorm box head, as from scratch"}


def _ablation_row(arm: str, iterations: int, wall: int | None, folder: Path) -> str | None:
    metrics = read_metrics(folder / "fold4")
    fold4, breast = _lever_figures(metrics, None), _lever_figures(read_metrics(folder / "breast"), None)
    if not fold4 or not breast:
        return None
    top = (metrics.get("top_box") or {}).get("on_lesion")  # measured since evaluate recorded it
    return (f"| {arm} | {iterations} | {'n/a' if wall is None else f'{wall / 60:.0f} min'} "
            f"| {fold4['lesion AP50']} | {breast['lesion AP50']} | {pct(top)} | {fold4['BI-RADS accuracy']} "
            f"| {fold4['AUC against pathology']} | {fold4['expert-seconds ratio, top1-only']} |")


def _machine(arm: Path) -> str:
    """The machine an arm trained on (machine.txt; cpu.txt before arms ran on GPUs too)."""
    recorded = [arm / "machine.txt", arm / "cpu.txt"]
    return next((f.read_text().strip() for f in recorded if f.is_file()), "not recorded")


def _arm_folders(arms: Path) -> list[tuple[str, str, Path]]:
    """Each arm's folder (ARM, or ARM@N for seed N) in ARMS's order, then by seed: (name, what, folder)."""
    found = []
    for folder in arms.iterdir() if arms.is_dir() else []:
        arm, _, seed = folder.name.partition("@")
        if arm in ARMS and (not seed or seed.isdigit()):
            what = ARMS[arm] + (f", seed {seed}" if seed else "")
            found.append(((list(ARMS).index(arm), int(seed or -1)), folder.name, what, folder))
    return [(name, what, folder) for _, name, what, folder in sorted(found, key=lambda f: f[0])]


def ablation_section(runs: Path, arms: str = ABLATION, title: str = "One lever at a time (first model)",
                     how: str = "`scripts/ablation.sh ARM...`") -> list[str]:
    """scripts/ablation.sh: the recipe's first model with one lever changed, on one machine, with
    the learning curve of each arm's checkpoints (wall time at a checkpoint: its share of the run).
    ``arms``: their folder under ``runs``; ``how``: the command that ran them."""
    rows, machines = [], set()
    for arm, what, folder in _arm_folders(runs / arms):
        info = folder / "model" / "model.json"
        if not info.is_file():
            continue
        machines.add(_machine(folder))
        total = json.loads(info.read_text())["training"]["iterations"]
        wall = seconds(folder, "train")
        at = sorted((int(d.name[3:]), d) for d in folder.glob("at-*") if d.name[3:].isdigit())
        for n, checkpoint in [*at, (total, folder)]:
            share = None if wall is None else round(wall * n / total)
            line = _ablation_row(f"{arm} ({what})" + ("" if n == total else f", at {n}"), n, share, checkpoint)
            rows += [line] if line else []
    if not rows:
        return []
    return [f"## {title}", "",
            f"{how} on {' and '.join(sorted(machines))}: the recipe's first model (from the "
            "recipe's trunk) with one thing changed, evaluated as the recipe evaluates it; rows \"at N\" are the "
            "same run's checkpoint after N iterations (before the learning-rate drop at 80 % where N < 80 % of "
            "the run).",
            "", "| arm | iterations | detector wall time | lesion AP50 fold 4 | lesion AP50 BrEaST part2 "
            "| top box on a lesion fold 4 | BI-RADS accuracy fold 4 | AUC vs pathology fold 4 "
            "| expert-seconds ratio fold 4, top1-only |",
            "|---|---|---|---|---|---|---|---|---|", *rows, ""]


def _falling(values: list[float]) -> bool:
    return len(values) > 1 and all(b < a for a, b in zip(values, values[1:]))


LOOP_GAIN = 0.02  # the fall the loop must show on part2: three relabels of its 62 images (item 52)


def _served_ratios(simulation: dict) -> list[float]:
    """The starter's test-set expert-seconds ratio, then the version served after each round;
    empty where the run did not test its starter."""
    starter = (simulation.get("starter") or {}).get("test_effort_ratio")
    rounds = [r.get("test_effort_ratio") for r in simulation["rounds"]]
    return [starter, *rounds] if starter is not None and None not in rounds else []


def _loop_falls(served: list[float]) -> bool:
    """Item 52's rule: no version served after a round costs more than the one before it, and the
    last is at least ``LOOP_GAIN`` below the starter (a refused version changes nothing)."""
    steady = all(b <= a for a, b in zip(served, served[1:]))
    return len(served) > 1 and steady and served[-1] <= served[0] - LOOP_GAIN


def _served_bf16_row(line: str) -> bool:
    """bench/predictor.py's row for ours in bf16 at the model's size with its default proposals, the
    model's own in bf16 ("own" before item 83; its tables before item 76 had no proposals column)."""
    cells = [cell.strip() for cell in line.strip(" |").split("|")]
    return cells[:2] == ["model own", "ours-bf16"] and (
        len(cells) == 6 or cells[2] == "own" or cells[2].startswith("default"))


def predict_time_target(runs: Path) -> str:
    """From bench/predictor.py's table (runs/bench_predictor.txt): ours, bf16, at the model's own size."""
    name = "predict time at the model's size <= 0.3x DefaultPredictor at 800 px"
    bench = runs / "bench_predictor.txt"
    row = next((line for line in (bench.read_text().splitlines() if bench.is_file() else [])
                if _served_bf16_row(line)), None)
    if row is None:
        return f"| {name} | not measured (`bench/predictor.py --sizes 0 800`) | |"
    ratio = float(row.strip(" |").split("|")[-1].strip().rstrip("x"))
    return f"| {name} | {ratio:.2f}x (bf16, `bench/predictor.py`) | {'met' if ratio <= 0.3 else 'missed'} |"


def targets_section(runs: Path) -> list[str]:
    """Issue 8's targets, each with what was measured."""
    fold4, breast = metrics_of(runs, "model-fold4") or {}, metrics_of(runs, "model-breast") or {}
    second = (metrics_of(runs, "model-no4-fold4") or {}).get("screening_paper") or {}
    effort = fold4.get("effort") or {}
    top1_only = (effort.get("displays") or {}).get("top1-only", {})  # the target reads what is served
    sims = {o: json.loads(p.read_text()) for o in ("random", "uncertain")
            if (p := runs / "simulation" / o / "simulation.json").is_file()}
    sim_values = {o: [r["seconds_per_image"] for r in s["rounds"] if r.get("seconds_per_image") is not None]
                  for o, s in sims.items()}

    def target(name: str, value, goal: float, higher: bool = True, fmt=lambda v: f"{v:.3f}") -> str:
        if value is None:
            return f"| {name} | not measured | |"
        met = value >= goal if higher else value <= goal
        return f"| {name} | {fmt(value)} | {'met' if met else 'missed'} |"

    auc = (fold4.get("screening") or {}).get("auc")
    lines = ["## Targets", "", "| target | measured | |", "|---|---|---|",
             target("lesion AP50 >= 0.85, BUS-BRA fold 4", fold4.get("ap50_lesion"), 0.85),
             target("lesion AP50 >= 0.65, BrEaST part2", breast.get("ap50_lesion"), 0.65),
             target("Table II the paper's way, sensitivity >= 95 %", second.get("sensitivity"), 0.95, fmt=pct),
             target("Table II the paper's way, specificity >= 95 %", second.get("specificity"), 0.95, fmt=pct),
             target("against pathology, AUC >= 0.85 (fold 4)", auc, 0.85),
             target("BI-RADS top-box accuracy >= 60 % (fold 4)", fold4.get("category_accuracy"), 0.60, fmt=pct),
             target("expert-seconds with pre-annotation <= 0.5x by hand (fold 4, shown: top1-only)",
                    top1_only.get("ratio"), 0.5, higher=False, fmt=lambda v: f"{v:.2f}x")]
    for order, values in sim_values.items():
        batches = " -> ".join(f"{v:.1f} s" for v in values) or "no rounds"
        served = _served_ratios(sims[order])
        if served:  # item 52's reading: the fixed test set, not each round's different batch
            shown = (f"part2, the served version: {' -> '.join(f'{v:.3f}x' for v in served)} (the starter "
                     f"first); batches {batches}")
            met = _loop_falls(served)
        else:  # a run from before item 52 (no starter on the test set): each round's batch
            shown, met = batches, _falling(values)
        lines.append(f"| expert-seconds falling round by round on BrEaST ({order} order) | {shown} | "
                     f"{'met' if met else 'missed'} |")
    if not sim_values:
        lines.append("| expert-seconds falling round by round on BrEaST | not measured (no simulation run) | |")
    lines.append(predict_time_target(runs))
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description="docs/results.md from the experiment scripts' outputs")
    parser.add_argument("runs", nargs="?", type=Path, default=REPO / "runs", help="their output folder")
    parser.add_argument("--doc", type=Path, default=DOC, help="the document to (re)write; its hand-written "
                        "discussion is kept")
    parser.add_argument("--pictures", type=Path, default=PICTURES, help="where its pictures go")
    args = parser.parse_args()
    shared = args.doc == DOC  # docs/results.md: with the arms kept in docs/results; a run's own: its runs only
    runs, doc, pictures = args.runs, args.doc, Pictures(args.pictures, args.doc)
    old = doc.read_text() if doc.is_file() else ""
    kept = old[old.index(DISCUSSION):] if DISCUSSION in old else ""
    lines = header(runs)
    lines += targets_section(runs)
    lines += evaluation_section("BUS-BRA fold 4 (held-out patients)", runs / RECIPE / "model-fold4", "fold4",
                                pictures)
    lines += evaluation_section("BrEaST part2 (another hospital, other scanners)", runs / RECIPE / "model-breast",
                                "breast", pictures)
    lines += classifier_section(runs)
    lines += ablation_section(runs)
    for folder, (title, how) in KEPT_ABLATIONS.items() if shared else ():
        lines += ablation_section(REPO / "docs" / "results", folder, title, how)
    lines += paper_protocol_section(runs)
    lines += split_section(runs, pictures)
    lines += subcategory_section(runs, pictures)
    lines += simulation_section(runs, pictures)
    doc.write_text("\n".join(lines) + "\n" + (kept or DISCUSSION + "\n\nTo be written.\n"))
    print(f"wrote {doc}")


if __name__ == "__main__":
    main()
