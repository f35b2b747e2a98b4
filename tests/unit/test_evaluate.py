"""Image-level decisions and the metrics built on them, on constructed detections (no model)."""

from pathlib import Path

import pytest

from model.evaluation.evaluate import evaluate, image_decision
from model.records import Box, Detection, ImageRecord

LESION = (10, 10, 50, 50)


def _record(name: str, birads: str, pathology: str) -> ImageRecord:
    return ImageRecord(name, f"/nonexistent/{name}.png", 100, 100, [Box(*LESION, birads)],
                       birads=birads, pathology=pathology)


def _detection(*boxes: tuple[str, float]) -> Detection:
    return Detection(tuple(Box(*LESION, c, s) for c, s in boxes), 100, 100)


def test_shown_takes_most_suspicious_shown_box_top_takes_most_confident_at_any_score():
    detection = _detection(("3", 0.45), ("5", 0.2))
    assert image_decision(detection, 0.5, "shown") == "1"       # nothing shown: no lesion
    assert image_decision(detection, 0.1, "shown") == "5"       # most suspicious of those shown
    assert image_decision(detection, 0.5, "top") == "3"         # most confident, whatever its score
    assert image_decision(_detection(("4", 0.01)), 0.5, "top") == "1"   # below any score kept
    with pytest.raises(ValueError, match="decision"):
        image_decision(detection, 0.5, "vote")


def test_low_scores_give_no_screening_shown_but_do_under_top():
    records = [_record("a", "5", "malignant"), _record("b", "2", "benign"), _record("c", "4", "malignant")]
    detections = [_detection(("5", 0.4)), _detection(("2", 0.3)), _detection(("4", 0.2))]
    shown = evaluate(records, detections, ["2", "3", "4", "5"]).metrics
    top = evaluate(records, detections, ["2", "3", "4", "5"], decision="top").metrics
    assert shown["screening"]["tp"] == 0 and shown["category_accuracy"] == 0
    assert (top["screening"]["tp"], top["screening"]["fn"], top["screening"]["tn"]) == (2, 0, 1)
    assert top["category_accuracy"] == 1 and top["decision"] == "top"
    assert top["category_kappa"] == pytest.approx(1.0) and shown["category_kappa"] == pytest.approx(0.0)
    assert top["screening_paper"]["tp"] == 1 and top["screening_paper"]["tn"] == 1
    assert top["screening_paper"]["auc"] == pytest.approx(1.0)  # the 5 (0.4) above the 2 (0); 4 left out
    assert top["ap50_lesion"] == pytest.approx(1.0) and top["acceptance_rate"] == 0  # none shown at 0.5


def test_acceptance_and_shown_category_read_the_display_the_annotator_sees():
    # the backend serves top1-only: a held-out version is judged by the box the expert is shown,
    # not by the boxes that would pass the 0.5 threshold
    records = [_record("a", "5", "malignant"), _record("b", "2", "benign")]
    detections = [_detection(("5", 0.4), ("3", 0.1)), _detection(("3", 0.3))]
    threshold = evaluate(records, detections, ["2", "3", "4", "5"]).metrics
    top1_only = evaluate(records, detections, ["2", "3", "4", "5"], display="top1-only").metrics
    assert threshold["acceptance_rate"] == 0 and threshold["category_accuracy"] == 0
    assert top1_only["acceptance_rate"] == 0.5 and top1_only["category_accuracy"] == 0.5
    assert top1_only["display"] == "top1-only" and threshold["display"] == "threshold"
    assert image_decision(detections[0], 0.5, "shown", "top1-only") == "5"
    assert image_decision(detections[0], 0.05, "shown", "top1-only") == "5"   # not the 3 beside it


def test_pathology_head_ranks_images_by_the_top_boxs_malignancy_categories_kept_beside():
    from dataclasses import replace

    from model.evaluation.evaluate import category_malignancy, malignancy_score
    from model.malignancy_reading import category_mass

    records = [_record("a", "2", "malignant"), _record("b", "5", "benign"), _record("c", "3", "benign")]
    # the categories rank the benign "5" first; the pathology head of each top box ranks right;
    # the second box of "b" (less confident) would call it malignant, and is not the image's lesion
    detections = [replace(_detection(("2", 0.9)), malignancy=(0.8,)),
                  replace(_detection(("5", 0.9), ("5", 0.3)), malignancy=(0.3, 0.95)),
                  replace(_detection(("3", 0.9)), malignancy=(0.1,))]
    assert malignancy_score(detections[1]) == 0.3 and category_malignancy(detections[1]) == 0.9
    assert category_mass(detections[1], 1) == 0.3 and category_mass(detections[2], 0) == 0.0
    assert malignancy_score(_detection(("5", 0.7))) == category_malignancy(_detection(("5", 0.7))) == 0.7
    screening = evaluate(records, detections, ["2", "3", "4", "5"], decision="top").metrics["screening"]
    assert screening["auc"] == pytest.approx(1.0)
    assert screening["auc_categories"] == pytest.approx(0.25)  # "a" ties with "c" at 0, below "b"
    assert (screening["tp"], screening["fp"]) == (0, 1)  # the decision stays the category's


def test_ranks_pick_the_top_box_and_order_ap_while_the_score_decides_what_is_shown():
    from dataclasses import replace

    from model.evaluation.evaluate import displayed

    elsewhere = (60, 60, 90, 90)
    records = [_record("a", "3", "benign"), _record("b", "3", "benign")]
    # the detector is surer of a box away from each lesion; the classifier's ranks say otherwise
    detections = [Detection((Box(*elsewhere, "3", 0.6), Box(*LESION, "3", 0.3)), 100, 100)] * 2
    reranked = [replace(d, ranks=(0.2, 0.5)) for d in detections]
    assert detections[0].top().score == 0.6 and reranked[0].top().score == 0.3
    assert reranked[0].rank_of(reranked[0].boxes[0]) == 0.2 and detections[0].rank_of(detections[0].boxes[0]) == 0.6
    assert displayed(reranked[0], 0.5, "threshold") == [reranked[0].boxes[0]]  # shown: score >= 0.5
    assert displayed(reranked[0], 0.5, "top1-only") == [reranked[0].boxes[1]]  # the top: by rank
    plain = evaluate(records, detections, ["2", "3", "4", "5"], decision="top").metrics
    ranked = evaluate(records, reranked, ["2", "3", "4", "5"], decision="top").metrics
    assert plain["top_box"]["on_lesion"] == 0 and ranked["top_box"]["on_lesion"] == 1
    assert ranked["ap50_lesion"] == pytest.approx(1.0) and plain["ap50_lesion"] < 0.6
    assert plain["acceptance_rate"] == ranked["acceptance_rate"] == 0  # the same box shown at 0.5


def test_table_iii_against_subcategory_and_pathology():
    records = [_record("a", "4A", "benign"), _record("b", "4B", "malignant"), _record("c", "4C", "malignant"),
               _record("d", "4A", "malignant"), _record("e", "2", "benign")]
    detections = [_detection(("4A", 0.9)), _detection(("4C", 0.8)), _detection(("3", 0.7)),
                  _detection(("4B", 0.9)), _detection(("2", 0.9))]
    sub = evaluate(records, detections, ["2", "3", "4A", "4B", "4C", "5"]).metrics["subcategories"]
    experts = sub["4A_vs_4B"]  # positive: the experts' 4B or 4C; the 3 counts as below 4B
    assert (experts["tp"], experts["fn"], experts["fp"], experts["tn"]) == (1, 1, 1, 1)
    proven = sub["4A_vs_4B_pathology"]
    assert (proven["tp"], proven["fn"], proven["fp"], proven["tn"]) == (2, 1, 0, 1)
    own = sub["experts_4A_vs_4B_pathology"]
    assert (own["tp"], own["fn"], own["fp"], own["tn"]) == (2, 1, 0, 1)
    assert sub["predicted_outside_4"] == 1 and sub["confusion_matrix"][0] == [1, 1, 0]


def test_table_iii_the_papers_way_reads_the_second_model_on_every_expert_4():
    """Each 4A/4B/4C lesion is read by the second model's best-overlapping box (likeness P(5) among
    2/3/5, cut at 0.1 and 0.5), whatever its top box is; a lesion with no box on it is left out."""
    records = [_record("a", "4A", "benign"), _record("b", "4B", "malignant"), _record("c", "4C", "malignant"),
               _record("d", "4A", "benign"), _record("e", "2", "benign")]

    def read(likeness: float | None) -> Detection:
        if likeness is None:  # a box far from the lesion
            return Detection((Box(60, 60, 90, 90, "2", 0.9),), 100, 100, class_scores=({"2": 0.9, "3": 0.0, "5": 0.1},))
        scores = {"2": 1 - likeness, "3": 0.0, "5": likeness}
        return Detection((Box(*LESION, "2", 0.9), Box(12, 10, 52, 50, "5", 0.2)), 100, 100,
                         class_scores=(scores, {"2": 0.0, "3": 0.0, "5": 1.0}))

    detections = [read(0.05), read(0.3), read(0.2), read(None), read(0.9)]
    m = evaluate(records, detections, ["2", "3", "5"], subcategory_cuts=(0.1, 0.5)).metrics
    paper = m["subcategories_paper"]
    assert (paper["lesions"], paper["not_found"], paper["cuts"]) == (4, 1, [0.1, 0.5])
    table = paper["4A_vs_4B"]  # 4A -> 4A, 4B -> 4B, 4C -> 4B: both positives found, the negative right
    assert (table["tp"], table["fn"], table["fp"], table["tn"]) == (2, 0, 0, 1)
    assert paper["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 0]]
    assert "subcategories_paper" not in evaluate(records, detections, ["2", "3", "4", "5"],
                                                 subcategory_cuts=(0.1, 0.5)).metrics  # a first model
    assert "subcategories_paper" not in evaluate(records, detections, ["2", "3", "5"]).metrics
    first_with_subcategories = ["2", "3", "4A", "4B", "4C", "5"]  # trained on BrEaST's own labels
    assert "subcategories_paper" not in evaluate(records, detections, first_with_subcategories,
                                                 subcategory_cuts=(0.1, 0.5)).metrics


def test_coarse_reads_subcategories_as_four():
    from model.datasets import coarse

    records = coarse([_record("a", "4B", "malignant"), _record("b", "3", "benign")])
    assert [(r.birads, r.boxes[0].category) for r in records] == [("4", "4"), ("3", "3")]


def test_a_four_left_unsplit_is_scored_below_4b_not_an_error():
    from model.subcategory import SPLIT_CLASSES

    records = [_record("a", "4B", "malignant"), _record("b", "4A", "benign")]
    detections = [_detection(("4", 0.9)), _detection(("4A", 0.8))]  # the first: no second-model match
    m = evaluate(records, detections, SPLIT_CLASSES, decision="top").metrics
    sub = m["subcategories"]
    assert (sub["4A_vs_4B"]["fn"], sub["4A_vs_4B"]["tn"], sub["predicted_outside_4"]) == (1, 1, 1)
    assert m["per_category"]["4"]["support"] == 0 and m["ap50"] >= 0


def test_subcategory_model_on_coarse_data_is_scored_coarse():
    m = evaluate([_record("a", "4", "malignant")], [_detection(("4B", 0.9))],
                 ["2", "3", "4A", "4B", "4C", "5"], decision="top").metrics
    assert m["classes"] == ["2", "3", "4", "5"] and m["category_accuracy"] == 1


def test_example_pictures_take_the_categories_in_turn():
    from model.evaluation.report import _one_of_each

    records = [_record(str(n), c, "benign") for n, c in enumerate(["4", "4", "4", "2", "5", "2"])]
    assert _one_of_each(records, 5) == [3, 0, 4, 5, 1]
    assert _one_of_each(records, 10) == [3, 0, 4, 5, 1, 2]


def test_category_and_malignancy_are_scored_apart_where_the_top_box_is_on_the_lesion_and_elsewhere():
    from dataclasses import replace

    from model.evaluation.report import markdown

    elsewhere = (60, 60, 90, 90)
    records = [_record("a", "5", "malignant"), _record("b", "2", "benign"), _record("c", "3", "benign"),
               _record("d", "4", "malignant"), ImageRecord("e", "/nonexistent/e.png", 100, 100, [], birads="1")]
    detections = [replace(_detection(("5", 0.9)), malignancy=(0.9,)),       # on the lesion, right
                  replace(_detection(("3", 0.9)), malignancy=(0.2,)),       # on the lesion, wrong category
                  replace(Detection((Box(*elsewhere, "3", 0.8),), 100, 100), malignancy=(0.7,)),  # elsewhere
                  replace(Detection((Box(*elsewhere, "2", 0.8),), 100, 100), malignancy=(0.1,)),  # elsewhere
                  Detection((), 100, 100)]                                  # no lesion, none found: left out
    m = evaluate(records, detections, ["2", "3", "4", "5"], decision="top").metrics
    on, off = m["by_top_box_place"]["on_lesion"], m["by_top_box_place"]["off_lesion"]
    assert (on["images"], off["images"]) == (2, 2)
    assert on["category_accuracy"] == 0.5 and off["category_accuracy"] == 0.5   # "c" called 3 by chance
    assert on["auc"] == pytest.approx(1.0) and off["auc"] == pytest.approx(0.0)
    assert "By that box's place: 2 images with it on a lesion: category accuracy 50.00 %, AUC against " \
           "pathology 1.000; 2 images with it elsewhere" in markdown(m, "m", "d")


def test_a_report_keeps_each_images_record_and_detection_as_evaluated(tmp_path, busbra_dir):
    from model import datasets
    from model.evaluation.report import read_detections, write_report

    records = datasets.load(f"busbra:{busbra_dir}")[:3]
    detections = [Detection(tuple(Box(b.x0 + 2, b.y0, b.x1, b.y1, "3", 0.8) for b in r.boxes), r.width, r.height,
                            class_scores=tuple({"2": 0.1, "3": 0.8, "4": 0.05, "5": 0.0} for _ in r.boxes),
                            malignancy=tuple(0.3 for _ in r.boxes), ranks=tuple(0.6 for _ in r.boxes))
                  for r in records]
    evaluation = evaluate(records, detections, ["2", "3", "4", "5"], decision="top")
    out = write_report(evaluation, tmp_path / "report", "m", "busbra")
    kept = read_detections(out)
    assert kept == list(zip(evaluation.records, evaluation.detections))
    kappa = evaluation.metrics["category_kappa"]
    assert f"Cohen's kappa against the experts {kappa:.3f}" in (Path(out) / "report.md").read_text()
    assert kept[0][1].malignancy_of(kept[0][1].top()) == 0.3 and kept[0][0].birads == records[0].birads


@pytest.mark.parametrize("kept_reading, served", [(None, (0.3 + 0.05) / 2), ("pathology", (0.3 + 0.05) / 2),
                                                  ("mean", 0.3)])
def test_a_reports_detections_are_read_as_served_whichever_reading_it_kept(tmp_path, busbra_dir, kept_reading,
                                                                             served):
    """Reports kept the box classifier's pathology head alone before the served reading was the
    mean (item 45; older ones record no reading): re-read so; one read as served stays as it is."""
    import json

    from model import datasets
    from model.evaluation.report import read_served_detections, write_report

    records = datasets.load(f"busbra:{busbra_dir}")[:2]
    detections = [Detection(tuple(Box(b.x0, b.y0, b.x1, b.y1, "3", 0.8) for b in r.boxes), r.width, r.height,
                            class_scores=tuple({"2": 0.1, "3": 0.85, "4": 0.05, "5": 0.0} for _ in r.boxes),
                            malignancy=tuple(0.3 for _ in r.boxes)) for r in records]
    evaluation = evaluate(records, detections, ["2", "3", "4", "5"], decision="top")
    if kept_reading:
        evaluation.metrics["readings"] = {"malignancy": kept_reading}
    out = write_report(evaluation, tmp_path / "report", "m", "busbra")
    if kept_reading is None:
        assert "readings" not in json.loads((out / "metrics.json").read_text())
    read = read_served_detections(out)
    assert [r for r, _ in read] == evaluation.records
    assert [d.malignancy for _, d in read] == [pytest.approx((served,) * len(r.boxes)) for r in records]
    assert [d.boxes for _, d in read] == [d.boxes for d in evaluation.detections]


def test_a_second_model_scored_on_data_with_4_is_named_and_averaged_as_itself():
    """A model without 4 on images with 4: scored on the coarse classes, but its report names its
    own classes and its per-category AP leaves out the 4 it cannot output."""
    from model.evaluation.report import markdown

    records = [_record("a", "2", "benign"), _record("b", "5", "malignant"), _record("c", "4", "malignant")]
    detections = [_detection(("2", 0.9)), _detection(("5", 0.9)), _detection(("5", 0.8))]
    m = evaluate(records, detections, ["2", "3", "5"], decision="top").metrics
    assert m["model_classes"] == ["2", "3", "5"] and "4" in m["classes"]
    assert m["ap50"] == pytest.approx(1.0)  # its 2 and 5 all found; the 4 it cannot name is not averaged in
    report = markdown(m, "second", "busbra")
    assert "model classes 2, 3, 5 (scored on " in report
    assert "a model without BI-RADS 4" in report and "this model's 4 counts as positive" not in report
    first = evaluate(records, detections, ["2", "3", "4", "5"], decision="top").metrics
    assert first["model_classes"] == first["classes"] and first["ap50"] < 1.0  # it missed the 4


def test_reports_say_what_each_display_shows():
    from model.evaluation.evaluate import shown_text

    assert shown_text("threshold", 0.5) == "boxes shown at score >= 0.5, display threshold"
    assert "0.5" not in shown_text("top1-only", 0.5) and "whatever its score" in shown_text("top1-only", 0.5)


def test_boxes_no_label_names_are_dropped_after_the_display_chooses_as_the_backend_drops_them():
    """A plain-4 starter on a config with only 4A/4B/4C: its top "4" box is chosen, then dropped,
    so top1-only shows nothing (not the next box), and no unnamed box ranks for AP."""
    from model.evaluation.evaluate import displayed

    named = ["2", "3", "4A", "4B", "4C", "5"]
    detection = Detection((Box(*LESION, "4", 0.9), Box(60, 60, 90, 90, "3", 0.6)), 100, 100)
    assert displayed(detection, 0.5, "top1-only", named) == []
    assert displayed(detection, 0.5, "threshold", named) == [detection.boxes[1]]
    assert displayed(detection, 0.5, "top1-only") == [detection.boxes[0]]
    record = ImageRecord("a", "/nonexistent/a.png", 100, 100, [Box(*LESION, "4A")], birads="4A")
    every = evaluate([record], [detection], ["2", "3", "4", "5"], display="top1-only").metrics
    shown = evaluate([record], [detection], ["2", "3", "4", "5"], display="top1-only", shown_categories=named).metrics
    assert every["ap50_lesion"] == pytest.approx(1.0) and every["acceptance_rate"] == 1.0
    assert shown["ap50_lesion"] == pytest.approx(0.0) and shown["acceptance_rate"] == 0.0
    assert shown["effort"]["displays"]["top1-only"]["seconds_per_image"] > \
        every["effort"]["displays"]["top1-only"]["seconds_per_image"]  # the lesion drawn by hand
