"""docs/results.md is written from the runs' own files: real evaluation reports on real images
(detections made from the expert boxes, no model), a fitted-cuts file and simulation results."""

import json
import re
import shutil
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from model import datasets
from model.config import TrainSettings
from model.evaluation.effort import ActionCosts
from model.evaluation.evaluate import evaluate
from model.evaluation.report import write_report
from model.pretrain import PretrainSettings
from model.records import Detection
from model.subcategory import SPLIT_CLASSES
from tests.scripts import load_script


@pytest.fixture()
def writer(tmp_path, monkeypatch):
    module = load_script("write_results")
    monkeypatch.setattr(module, "DOC", tmp_path / "docs" / "results.md")
    monkeypatch.setattr(module, "PICTURES", tmp_path / "docs" / "results")
    return module


def _report(records, out: Path, classes, categories=None, screening_cut=None) -> None:
    detections = [Detection(tuple(replace(b, score=0.9, category=(categories or {}).get(r.image_id, b.category))
                                  for b in r.boxes), r.width, r.height) for r in records]
    write_report(evaluate(records, detections, classes, decision="top", screening_cut=screening_cut),
                 out, "m", "data")


def _model_json(folder: Path, settings: TrainSettings, images: int, classes=("2", "3", "4", "5")) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.json").write_text(json.dumps({"classes": list(classes), "data": {"images": images},
                                                   "settings": asdict(settings)}))


def _simulation(folder: Path, seconds: list[float | None], served: list[float] | None = None) -> None:
    """simulation.json of rounds whose batches cost ``seconds``; with ``served``, the starter's and
    each round's served version's test-set ratios (runs since item 52)."""
    rows = [{"round": n, "train_images": 16 * (n + 1), "batch_images": 16 if n else 0,
             "seconds_per_image": s, "by_hand_seconds_per_image": 7.0 if n else None,
             "ratio": s / 7.0 if s else None,
             "corrections_per_image": 0.5 if n else None, "baseline_corrections_per_image": 1.0 if n else None,
             "acceptance_rate": 0.5 if n else None, "ap50": 0.4, "ap50_lesion": 0.7, "sensitivity": 0.8,
             "specificity": 0.6, "elapsed_seconds": 100.0 * n,
             **({"test_effort_ratio": served[n + 1]} if served else {})} for n, s in enumerate(seconds)]
    folder.mkdir(parents=True)
    (folder / "simulation.json").write_text(json.dumps({
        "settings": {"initial": 16, "round_size": 16, "rounds": 2, "score_threshold": 0.5, "display": "top1",
                     "costs": asdict(ActionCosts()), "train": asdict(TrainSettings(max_iter=60, image_size=0))},
        "rounds": rows, **({"starter": {"test_effort_ratio": served[0]}} if served else {})}))


def _classifier(model: Path, settings: dict, accuracy: float, auc: float, stamps: Path, stage: str) -> None:
    """A box classifier's classifier.json in ``model``, its stage STAGE.start/.end (300 s apart) in ``stamps``."""
    (model / "box_classifier").mkdir(parents=True)
    (model / "box_classifier" / "classifier.json").write_text(json.dumps({
        "settings": {"context": 1.5, "crop_size": 112, "epochs": 30, **settings}, "train_boxes": 1127,
        "holdout": {"crops": 365, "birads_accuracy": accuracy, "pathology_auc": auc}}))
    (stamps / f"{stage}.start").write_text("5500")
    (stamps / f"{stage}.end").write_text("5800")


def _reference(runs: Path, busbra, breast) -> None:
    ref = runs / "reference"
    _model_json(ref / "model", TrainSettings(image_size=320, max_size=576, max_iter=1500, batch_size=4), 1127)
    _model_json(ref / "model-no4", TrainSettings(max_iter=300), 700, ("2", "3", "5"))
    (ref / "trunk").mkdir(parents=True)
    (ref / "trunk" / "pretrain.json").write_text(json.dumps({
        "settings": asdict(PretrainSettings()), "train_crops": 1127,
        "holdout": {"crops": 365, "birads_accuracy": 0.5, "pathology_auc": 0.875}}))
    for name, start, end in (("pretrain", 1000, 2200), ("model", 2500, 5500), ("model-no4", 5500, 6100),
                             ("evaluations", 6100, 6400)):
        (ref / f"{name}.start").write_text(str(start))
        (ref / f"{name}.end").write_text(str(end))
    _report(busbra, ref / "model-fold4", ["2", "3", "4", "5"])
    _report(datasets.coarse(breast), ref / "model-breast", ["2", "3", "4", "5"])
    no4 = [r for r in busbra if r.birads != "4"]
    _report(no4, ref / "model-no4-fold4", ["2", "3", "5"],
            screening_cut={"cut": 0.5, "data": "breast:/data/BrEaST", "splits": ["part1"]})
    with_lesion = [r for r in breast if r.boxes]
    _report(with_lesion, ref / "split-breast", list(SPLIT_CLASSES),
            {r.image_id: "4" for r in with_lesion if r.birads == "4B"})  # the 4B lesion left unsplit


def test_results_document_from_runs(tmp_path, monkeypatch, writer, busbra_dir, breast_dir):
    runs = tmp_path / "runs"
    busbra, breast = datasets.load(f"busbra:{busbra_dir}"), datasets.load(f"breast:{breast_dir}")
    _reference(runs, busbra, breast)
    _simulation(runs / "simulation" / "random", [None, 3.0, 2.5])
    _simulation(runs / "simulation" / "uncertain", [None, 2.0, 2.5])
    # the second model's own BrEaST report: P(5) 0.9 on the experts' 4B and 4C lesions, 0.05 elsewhere
    seconds = [Detection(tuple(replace(b, score=0.9, category="5" if b.category in ("4B", "4C") else "2")
                               for b in r.boxes), r.width, r.height,
                         class_scores=tuple({"2": 1 - q, "3": 0.0, "5": q} for b in r.boxes
                                            for q in [0.9 if b.category in ("4B", "4C") else 0.05]))
               for r in breast]
    write_report(evaluate(breast, seconds, ["2", "3", "5"], decision="top", subcategory_cuts=(0.1, 0.5)),
                 runs / "reference" / "model-no4-breast", "m", "data")
    fours = [b.category for r in breast for b in r.boxes if b.category in ("4A", "4B", "4C")]
    positives = sum(c != "4A" for c in fours)

    monkeypatch.setattr(sys, "argv", ["write_results.py", str(runs)])
    writer.main()
    doc = writer.DOC.read_text()
    assert "Wall time of the whole script (its stages added up): 85 min" in doc
    assert "(20 min)" in doc and "(50 min)" in doc
    assert "1127 training images" in doc and "short side 320 px, long side at most 576" in doc
    assert "BI-RADS accuracy 50.00 %, pathology AUC 0.875" in doc
    assert "class-weighted BI-RADS head (+ 1.0 x the squared earth mover's distance in rank order)" in doc
    assert "lesion AP50 (any category) 1.000" in doc  # detections are the expert boxes
    assert "BI-RADS accuracy 100.00 % (Cohen's kappa against the experts 1.000)" in doc
    assert "| paper, Table II (second model, BI-RADS 5 vs 1-3) | 98.10 % | 97.78 % | 98.13 %" in doc
    assert "| ours, second model, BUS-BRA fold 4 (BI-RADS 5 vs 1-3) | 100.00 % | 100.00 % | 100.00 %" in doc
    assert "| ours, second model, BUS-BRA fold 4, at P(5) >= 0.500 (fitted on BrEaST part1) | 100.00 %" in doc
    second_report = (runs / "reference" / "model-no4-fold4" / "report.md").read_text()
    assert "BI-RADS 5 where P(5) >= 0.500 (the cut `birads fit-cuts` fitted on BrEaST part1)" in second_report
    assert "| lesion AP50 >= 0.85, BUS-BRA fold 4 | 1.000 | met |" in doc
    assert "| against pathology, AUC >= 0.85 (fold 4) | not measured | |" not in doc
    assert "| expert-seconds with pre-annotation <= 0.5x by hand (fold 4, shown: top1-only) | 0.23x | met |" in doc
    assert "(random order) | 3.0 s -> 2.5 s | met |" in doc and "(uncertain order) | 2.0 s -> 2.5 s | missed |" in doc
    assert "| ours, against the experts' subcategory | 50.00 % | 0.00 % | 100.00 % | 0/1/0/1 | 1 |" in doc
    assert ("| ours the paper's way (the second model on each expert 4A/4B/4C lesion), against the experts' "
            f"subcategory | 100.00 % | 100.00 % | 100.00 % | {positives}/0/0/{len(fours) - positives} | "
            "no box on 0 |") in doc
    assert "| only the most confident box" in doc and "expert-seconds" in doc
    assert "| 2 | 48 | 16 | 2.500 | 7.000 | 0.357 |" in doc  # uncertain order, round 2
    assert "display top1" in doc and "draw 7 s" in doc
    for picture in ("fold4_confusion_matrix.png", "breast_examples.png", "simulation.png", "split_4abc.png",
                    "split_4abc_paper.png"):
        assert (writer.PICTURES / picture).stat().st_size > 1000
    # the hand-written discussion survives a rewrite
    writer.DOC.write_text(doc.replace("To be written.", "Because of reasons."))
    writer.main()
    assert writer.DOC.read_text().endswith("Because of reasons.\n")


def test_box_classifier_section_sets_the_detector_alone_beside_it(tmp_path, monkeypatch, writer, busbra_dir,
                                                                   breast_dir):
    runs = tmp_path / "runs"
    busbra, breast = datasets.load(f"busbra:{busbra_dir}"), datasets.load(f"breast:{breast_dir}")
    _reference(runs, busbra, breast)
    assert writer.classifier_section(runs) == []  # no experiment, no section
    experiment = runs / "box-classifier"
    _classifier(experiment / "model", {"blend": 0.5}, 0.55, 0.88, experiment, "classifier-model")
    _report(busbra, experiment / "model-fold4", ["2", "3", "4", "5"],
            {r.image_id: "2" for r in busbra})  # with the classifier every lesion is BI-RADS 2

    monkeypatch.setattr(sys, "argv", ["write_results.py", str(runs)])
    writer.main()
    doc = writer.DOC.read_text()
    assert "## The box classifier: what it changes" in doc and "(5 min)" in doc
    assert "BI-RADS accuracy 55.00 %, pathology AUC 0.880" in doc
    header = next(line for line in doc.splitlines() if line.startswith("| | BUS-BRA fold 4, detector alone"))
    assert header.count("|") == 4  # fold 4 alone and with it; BrEaST was not evaluated with it here
    accuracy = next(line for line in doc.splitlines() if line.startswith("| BI-RADS accuracy |"))
    with_it = sum(r.birads == "2" for r in busbra) / len(busbra)
    assert accuracy == f"| BI-RADS accuracy | 100.00 % | {100 * with_it:.2f} % |"


def test_ablation_section_lists_each_arm_and_its_checkpoints(tmp_path, writer, busbra_dir, breast_dir):
    runs = tmp_path / "runs"
    busbra, breast = datasets.load(f"busbra:{busbra_dir}"), datasets.load(f"breast:{breast_dir}")
    assert writer.ablation_section(runs) == []  # no arm run, no section
    arm = runs / "ablation" / "frozen-res4"
    (arm / "model").mkdir(parents=True)
    (arm / "model" / "model.json").write_text(json.dumps({"training": {"iterations": 2000}}))
    (arm / "train.start").write_text("1000")
    (arm / "train.end").write_text("4000")
    (arm / "cpu.txt").write_text("Some CPU\n")
    for folder, categories in ((arm, None), (arm / "at-500", {r.image_id: "2" for r in busbra})):
        _report(busbra, folder / "fold4", ["2", "3", "4", "5"], categories)
        _report(datasets.coarse(breast), folder / "breast", ["2", "3", "4", "5"])
    (arm / "at-1000").mkdir()  # a checkpoint not evaluated yet: no row

    lines = writer.ablation_section(runs)
    assert "`scripts/ablation.sh ARM...` on Some CPU:" in lines[2]
    (arm / "machine.txt").write_text("Some GPU\n")  # where arms record it now
    assert "`scripts/device_ablation.sh` on Some GPU:" in writer.ablation_section(
        runs, how="`scripts/device_ablation.sh`")[2]
    shutil.copytree(arm, runs / "ablation" / "frozen-res4@7")  # the same arm with seed 7, listed after it
    shutil.copytree(arm, runs / "ablation" / "unknown-arm")  # not an arm of ablation.sh: no row
    listed = writer.ablation_section(runs)
    assert not any(line.startswith("| unknown-arm") for line in listed)
    seeded = [line for line in listed if line.startswith("| frozen-res4")]
    assert [line.split(" | ")[0] for line in seeded] == [
        "| frozen-res4 (res3 and res4 frozen too), at 500", "| frozen-res4 (res3 and res4 frozen too)",
        "| frozen-res4@7 (res3 and res4 frozen too, seed 7), at 500",
        "| frozen-res4@7 (res3 and res4 frozen too, seed 7)"]
    rows = [line for line in lines if line.startswith("| frozen-res4")]
    at_500 = sum(r.birads == "2" for r in busbra) / len(busbra)
    assert rows == [
        # every top box on its lesion; every box verified, three in four relabelled: (1.6 + 0.75 * 2.9) / 7 s
        f"| frozen-res4 (res3 and res4 frozen too), at 500 | 500 | 12 min | 1.000 | 1.000 | 100.00 % "
        f"| {100 * at_500:.2f} % | 0.500 | 0.54x |",
        # the experts' own categories against pathology: AUC 0.9 on these images
        "| frozen-res4 (res3 and res4 frozen too) | 2000 | 50 min | 1.000 | 1.000 | 100.00 % | 100.00 % | 0.900 "
        "| 0.23x |"]


def test_every_arm_of_the_ablation_script_is_described(writer):
    script = (Path(writer.__file__).parent / "ablation.sh").read_text()
    arms = set(re.findall(r"^ {4}([a-z0-9-]+)\) args=", script, flags=re.M))
    assert arms and arms == set(writer.ARMS)


def test_each_kept_ablation_writes_its_section_from_the_kept_reports(writer):
    # the kept folders are all docs/results.md has of those runs (runs/ stays on the machine)
    results = Path(writer.__file__).parents[1] / "docs" / "results"
    for folder, (title, _) in writer.KEPT_ABLATIONS.items():
        section = writer.ablation_section(results, folder, title)
        assert section[0] == f"## {title}", folder
        rows = [line for line in section if line.startswith("| ") and not line.startswith("| arm |")]
        assert rows, f"{folder}: no arm's row"


def test_the_recipes_heads_and_box_classifier_stage_are_described_from_the_run(tmp_path, monkeypatch, writer,
                                                                                 busbra_dir, breast_dir):
    runs = tmp_path / "runs"
    busbra, breast = datasets.load(f"busbra:{busbra_dir}"), datasets.load(f"breast:{breast_dir}")
    _reference(runs, busbra, breast)
    ref = runs / "reference"
    gn = ["MODEL.FPN.NORM", "GN", "MODEL.ROI_BOX_HEAD.NORM", "GN"]
    _model_json(ref / "model", TrainSettings(image_size=320, max_size=576, max_iter=1200, extra=gn), 1127)
    _classifier(ref / "model", {"blend": 0.0, "rescore": 0.0, "background_per_lesion": 0.5, "misplaced_share": 0.5},
                0.5123, 0.858, ref, "classifier")

    monkeypatch.setattr(sys, "argv", ["write_results.py", str(runs)])
    writer.main()
    doc = writer.DOC.read_text()
    assert "four GroupNorm convolutions" in doc and "1200 iterations" in doc
    assert "4. **The first model's box classifier** (5 min)" in doc
    assert "50 % of them beside or around a lesion" in doc and "blend 0.0" in doc
    assert "BI-RADS accuracy 51.23 %, pathology AUC 0.858" in doc
    assert "5. Evaluations, the 4A/4B/4C cuts and the Table II cut (5 min)" in doc
    assert "Wall time of the whole script (its stages added up): 90 min" in doc


def test_a_run_with_the_default_heads_and_no_classifier_says_so(tmp_path, monkeypatch, writer, busbra_dir,
                                                               breast_dir):
    runs = tmp_path / "runs"
    _reference(runs, datasets.load(f"busbra:{busbra_dir}"), datasets.load(f"breast:{breast_dir}"))
    monkeypatch.setattr(sys, "argv", ["write_results.py", str(runs)])
    writer.main()
    doc = writer.DOC.read_text()
    assert "detectron2's default FPN and box head" in doc and "box classifier** (" not in doc
    assert "4. Evaluations, the 4A/4B/4C cuts and the Table II cut (5 min)" in doc


def test_a_runs_own_document_links_its_own_pictures(tmp_path, monkeypatch, writer, busbra_dir, breast_dir):
    runs = tmp_path / "runs"
    _reference(runs, datasets.load(f"busbra:{busbra_dir}"), datasets.load(f"breast:{breast_dir}"))
    own = tmp_path / "docs" / "results" / "cpu-x-reference"
    monkeypatch.setattr(sys, "argv", ["write_results.py", str(runs), "--doc", str(own / "results.md"),
                                      "--pictures", str(own / "pictures")])
    writer.main()
    doc = (own / "results.md").read_text()
    assert "![confusion matrix](pictures/fold4_confusion_matrix.png)" in doc
    assert (own / "pictures" / "fold4_confusion_matrix.png").stat().st_size > 1000
    assert not (tmp_path / "docs" / "results.md").exists()  # the main document untouched
    assert "One lever at a time on" not in doc  # the arms kept in docs/results belong to docs/results.md


def test_the_loop_section_names_each_fine_tunes_schedule_old_runs_and_new():
    from model.simulation import schedule_text

    fixed = {"train": asdict(TrainSettings(max_iter=60, base_lr=0.005))}  # items 6-36: no fine_tune_* saved
    assert schedule_text(fixed) == "60 iterations at learning rate 0.005"
    jobs = {"train": asdict(TrainSettings()), "fine_tune_epochs": 0.75, "fine_tune_lr": 0.001}
    assert schedule_text(jobs) == "0.75 augmented epochs at learning rate 0.001"
    replaying = {**jobs, "replay_ratio": 1.0, "replay_source": "busbra:BUS-BRA (1127 images)"}
    assert schedule_text(replaying) == ("0.75 augmented epochs at learning rate 0.001, replaying 1 image(s) "
                                            "of busbra:BUS-BRA (1127 images) per labelled one")
    holding = {**jobs, "fine_tune_freeze": ["category-head"], "classifier_min_lesions": 1000}
    assert schedule_text(holding) == ("0.75 augmented epochs at learning rate 0.001, holding the category-head "
                                      "as served, the served box classifier carried until the labelled images "
                                      "hold 1000 lesions")


@pytest.mark.parametrize("served, verdict", [
    ([0.739, 0.739, 0.739], "missed"),           # item 52: every version refused, the starter kept
    ([0.739, 0.730, 0.715], "met"),              # steady and 0.024x below the starter
    ([0.739, 0.700, 0.725], "missed"),           # a later version costs more than the one before it
])
def test_the_loop_target_reads_the_served_versions_on_the_test_set(tmp_path, writer, served, verdict):
    """Since item 52 a loop run tests its starter: the target reads the starter's and each served
    version's test-set ratio (not each round's batch, a different 16 images each time)."""
    runs = tmp_path / "runs"
    _simulation(runs / "simulation" / "uncertain", [None, 4.8], served)
    row = next(line for line in writer.targets_section(runs) if "falling round by round" in line)
    shown = " -> ".join(f"{v:.3f}x" for v in served)
    assert row == (f"| expert-seconds falling round by round on BrEaST (uncertain order) | part2, the served "
                   f"version: {shown} (the starter first); batches 4.8 s | {verdict} |")


def test_the_predict_time_target_reads_the_served_bf16_row_of_either_bench_table(writer, tmp_path):
    """bench/predictor.py's tables before item 76 had no proposals column; since, one row per count:
    the target reads ours in bf16 at the model's size with its default proposals (the model's own in
    bf16), whichever table it is."""
    runs = tmp_path / "runs"
    runs.mkdir()
    assert "not measured" in writer.predict_time_target(runs)
    (runs / "bench_predictor.txt").write_text("| model own | detectron2 | 0.833 | 1201 | 1.00x | 0.43x |\n"
                                              "| model own | ours-bf16 | 0.506 | 1256 | 0.61x | 0.26x |\n")
    assert "| 0.26x (bf16," in writer.predict_time_target(runs)
    (runs / "bench_predictor.txt").write_text("| model own | ours-bf16 | 100 | 0.406 | 1256 | 0.49x | 0.21x |\n"
                                              "| model own | ours-bf16 | own | 0.706 | 1256 | 0.85x | 0.36x |\n")
    assert "| 0.36x (bf16," in writer.predict_time_target(runs) and "missed" in writer.predict_time_target(runs)
    # since item 83 the default row says how many proposals the predictor's default read
    (runs / "bench_predictor.txt").write_text("| model own | ours-bf16 | 75 | 0.406 | 1256 | 0.49x | 0.21x |\n"
                                              "| model own | ours-bf16 | default 300 | 0.606 | 1256 | 0.7x | 0.29x |\n")
    assert "| 0.29x (bf16," in writer.predict_time_target(runs) and "met" in writer.predict_time_target(runs)
