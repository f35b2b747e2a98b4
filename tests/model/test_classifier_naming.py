"""scripts/classifier_naming.py: a report's kept detections re-named by a box classifier trained on
real BUS-BRA images, then scored as `birads evaluate` scores them."""

import json
from dataclasses import replace

import pytest

from model import datasets, taxonomy
from model.evaluation.evaluate import evaluate
from model.io import DataError
from model.malignancy_reading import category_mass
from model.records import Box, Detection
from tests.scripts import load_script

pytestmark = pytest.mark.slow
CLASSES = ["2", "3", "4", "5"]


@pytest.fixture()
def naming(monkeypatch):
    script = load_script("classifier_naming")
    # a barely trained classifier: plumbing, not accuracy
    monkeypatch.setattr(script, "TRAINING", replace(script.TRAINING, crop_size=32, epochs=2, batch_size=4, bf16=False))
    return script


@pytest.fixture()
def report(busbra_dir, tmp_path):
    """A report as `birads evaluate --out` keeps it, of a detector that put a box on each lesion,
    named 4 with some doubt, and a weak one beside it."""
    records = datasets.load(f"busbra:{busbra_dir}")
    lines, detections = [], []
    for record in records:
        lesion = replace(record.boxes[0], category="4", score=0.8)
        beside = Box(0, 0, 20, 20, "2", 0.1)
        detection = Detection(boxes=(lesion, beside), width=record.width, height=record.height,
                              class_scores=({"2": 0.1, "3": 0.2, "4": 0.4, "5": 0.2},
                                            {"2": 0.1, "3": 0.02, "4": 0.02, "5": 0.01}))
        lines.append(json.dumps({"record": record.to_dict(), "detection": detection.to_dict()}))
        detections.append(detection)
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "detections.jsonl").write_text("\n".join(lines) + "\n")
    # scored as the reference's evaluations score (the most confident box), its classes rolled up
    scored = evaluate(records, detections, CLASSES, decision="top").metrics
    (folder / "metrics.json").write_text(json.dumps(scored))
    return folder


def test_blend_0_reproduces_the_report_and_blend_1_names_boxes_by_the_classifier(naming, report, busbra_dir,
                                                                                 tmp_path, monkeypatch):
    out = tmp_path / "out"
    argv = ["--data", f"busbra:{busbra_dir}", "--splits", "fold1", "fold2", "--classes", *CLASSES,
            "--reports", str(report), "--seeds", "42", "--blends", "0", "1", "--out", str(out)]
    assert naming.main(argv) == 0
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert [(r["seed"], r["blend"]) for r in rows] == [(42, 0.0), (42, 1.0)]
    scored = json.loads((report / "metrics.json").read_text())  # blend 0: the report's own figures
    assert rows[0]["accuracy"] == scored["category_accuracy"] == pytest.approx(2 / 8)  # all named 4: two of 8
    assert rows[0]["table_ii_spe"] == scored["screening_paper"]["specificity"]
    assert rows[0]["effort_ratio"] == scored["effort"]["displays"]["top1-only"]["ratio"]
    pairs = naming.read_detections(report)
    records, stored = [r for r, _ in pairs], [d for _, d in pairs]

    # blend 1: each box named by the classifier's reading of its crop, its place and score kept
    named_by = naming.seed_classifier([], CLASSES, 42, out)  # kept from the run: nothing to train on
    named_by.settings = replace(named_by.settings, blend=1.0)
    greys = {r.image_id: naming.cv2.cvtColor(naming.as_rgb(r.path), naming.cv2.COLOR_RGB2GRAY) for r in records}
    for record, detection in zip(records, stored):
        after = naming.renamed(detection, greys[record.image_id], named_by)
        assert [(b.x0, b.y0, b.x1, b.y1, b.score) for b in after.boxes] == \
            [(b.x0, b.y0, b.x1, b.y1, b.score) for b in detection.boxes]
        opinions, _ = named_by.opinions(greys[record.image_id], detection.boxes)
        for box, opinion in zip(after.boxes, opinions):
            assert box.category == taxonomy.median_category({c: opinion[c] for c in CLASSES})
    assert rows[1]["accuracy"] == naming.figures(
        records, [naming.renamed(d, greys[r.image_id], named_by) for r, d in zip(records, stored)],
        naming.scoring(report))["accuracy"]
    with pytest.raises(DataError, match="class scores"):  # a box without them cannot be blended
        naming.renamed(replace(stored[0], class_scores=()), greys[records[0].image_id], named_by)

    trained = []
    train = naming.train_box_classifier
    monkeypatch.setattr(naming, "train_box_classifier", lambda *a, **k: trained.append(1) or train(*a, **k))
    assert naming.main(argv) == 0 and not trained  # a rerun loads the kept classifier
    assert len((out / "rows.jsonl").read_text().splitlines()) == 2  # this run's rows, not appended
    assert "table_ii_balanced" in (out / "summary.md").read_text()
    monkeypatch.setattr(naming, "TRAINING", replace(naming.TRAINING, epochs=1))
    assert naming.main(argv) == 0 and trained == [1]  # kept, but of another recipe: trained again


def test_reread_gives_each_box_the_classifiers_rank_and_served_malignancy(naming, report, busbra_dir, tmp_path):
    """Item 46: with --reread a box's rank (which box is on top) and P(malignant) are the new
    classifier's, the latter read as served (averaged with the box's class-score mass at 4 or
    above); its place, score and category (blend 0) stay the detector's."""
    out = tmp_path / "out"
    argv = ["--data", f"busbra:{busbra_dir}", "--splits", "fold1", "fold2", "--classes", *CLASSES,
            "--reports", str(report), "--seeds", "42", "--blends", "0", "--epochs", "3", "--reread",
            "--out", str(out)]
    assert naming.main(argv) == 0
    [row] = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert row["reread"] and row["epochs"] == 3
    named_by = naming.seed_classifier([], CLASSES, 42, out, replace(naming.TRAINING, epochs=3))  # kept from the run
    assert named_by.settings.epochs == 3 and named_by.settings.rescore == 0.5
    named_by.settings = replace(named_by.settings, blend=0.0)  # as the run read them
    pairs = naming.read_detections(report)
    records, stored = [r for r, _ in pairs], [d for _, d in pairs]
    greys = {r.image_id: naming.cv2.cvtColor(naming.as_rgb(r.path), naming.cv2.COLOR_RGB2GRAY) for r in records}
    reread = []
    for record, detection in zip(records, stored):
        grey = greys[record.image_id]
        after = naming.renamed(detection, grey, named_by, rereads=True)
        kept = naming.renamed(detection, grey, named_by)
        assert (kept.ranks, kept.malignancy) == (detection.ranks, detection.malignancy) == ((), ())
        assert [(b.x0, b.y0, b.x1, b.y1, b.score, b.category) for b in after.boxes] == \
            [(b.x0, b.y0, b.x1, b.y1, b.score, b.category) for b in kept.boxes]
        for scores, stored_scores in zip(after.class_scores, detection.class_scores):  # blend 0: the detector's
            assert scores == pytest.approx(stored_scores)
        opinions, malignancy = named_by.opinions(grey, detection.boxes)
        for number, (box, opinion, head) in enumerate(zip(detection.boxes, opinions, malignancy)):
            assert after.ranks[number] == pytest.approx((box.score * (1 - opinion["background"])) ** 0.5)
            assert after.malignancy[number] == pytest.approx((head + category_mass(detection, number)) / 2)
        reread.append(after)
    figures = naming.figures(records, reread, naming.scoring(report))
    assert row["auc"] == figures["auc"] and row["top_box_on_lesion"] == figures["top_box_on_lesion"]
    assert 0.0 <= row["auc"] <= 1.0


def test_an_ensemble_reads_each_box_by_the_mean_of_its_members(naming, report, busbra_dir, tmp_path):
    """Item 48: --ensemble also scores the seeds' classifiers read as one, each box's category,
    background and malignancy probabilities the mean of the members'."""
    out = tmp_path / "out"
    argv = ["--data", f"busbra:{busbra_dir}", "--splits", "fold1", "fold2", "--classes", *CLASSES,
            "--reports", str(report), "--seeds", "42", "43", "--blends", "0", "--reread", "--ensemble",
            "--out", str(out)]
    assert naming.main(argv) == 0
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in rows] == [42, 43, "42+43"]
    members = [naming.seed_classifier([], CLASSES, seed, out) for seed in (42, 43)]  # kept from the run
    joined = naming.ensemble(members)
    assert joined.model is not members[0].model and joined.settings == members[0].settings
    pairs = naming.read_detections(report)
    records, stored = [r for r, _ in pairs], [d for _, d in pairs]
    greys = {r.image_id: naming.cv2.cvtColor(naming.as_rgb(r.path), naming.cv2.COLOR_RGB2GRAY) for r in records}
    for record, detection in zip(records, stored):
        grey = greys[record.image_id]
        (first, first_malignancy), (second, second_malignancy) = (m.opinions(grey, detection.boxes) for m in members)
        both, both_malignancy = joined.opinions(grey, detection.boxes)
        assert both_malignancy == pytest.approx([(a + b) / 2 for a, b in zip(first_malignancy, second_malignancy)],
                                                abs=1e-5)
        for mean, a, b in zip(both, first, second):
            assert mean == pytest.approx({c: (a[c] + b[c]) / 2 for c in a}, abs=1e-5)
    joined.settings = replace(joined.settings, blend=0.0)  # as the run read them
    reread = [naming.renamed(d, greys[r.image_id], joined, rereads=True) for r, d in zip(records, stored)]
    assert rows[2]["auc"] == naming.figures(records, reread, naming.scoring(report))["auc"]


def test_flip_at_test_reads_each_crop_with_its_mirror_image(naming, report, busbra_dir, tmp_path):
    """Item 49: --flip-at-test has every box read as its crop's and its mirror image's mean (the
    mean itself: tests/unit/test_crops.py)."""
    out = tmp_path / "out"
    argv = ["--data", f"busbra:{busbra_dir}", "--splits", "fold1", "fold2", "--classes", *CLASSES,
            "--reports", str(report), "--seeds", "42", "--blends", "0", "--reread", "--out", str(out)]
    assert naming.main(argv) == 0
    [plain_row] = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert naming.main([*argv, "--flip-at-test"]) == 0
    [row] = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert row["flip"] and not plain_row["flip"]
    named_by = naming.seed_classifier([], CLASSES, 42, out)  # kept from the first run
    pairs = naming.read_detections(report)
    records, stored = [r for r, _ in pairs], [d for _, d in pairs]
    greys = {r.image_id: naming.cv2.cvtColor(naming.as_rgb(r.path), naming.cv2.COLOR_RGB2GRAY) for r in records}
    read = {}
    for flip in (False, True):
        named_by.settings = replace(named_by.settings, blend=0.0, flip_at_test=flip)
        read[flip] = [naming.renamed(d, greys[r.image_id], named_by, rereads=True) for r, d in zip(records, stored)]
    assert [d.malignancy for d in read[True]] != [d.malignancy for d in read[False]]
    assert row["auc"] == naming.figures(records, read[True], naming.scoring(report))["auc"]
    assert plain_row["auc"] == naming.figures(records, read[False], naming.scoring(report))["auc"]
