"""scripts/lesion_rank.py: a report's kept detections ranked by the detector's P(lesion), no model run."""

from dataclasses import astuple, replace

import pytest

from model import datasets
from model.evaluation.evaluate import evaluate
from model.evaluation.report import write_report
from model.records import Box, Detection
from tests.scripts import load_script

CLASSES = ["2", "3", "4", "5"]


@pytest.fixture(scope="module")
def lesion_rank():
    return load_script("lesion_rank")


def test_the_classifiers_p_lesion_is_recovered_from_a_stored_rank(lesion_rank):
    for score, p_lesion, share in ((0.4, 0.8, 0.5), (0.9, 0.3, 0.75), (0.06, 1.0, 0.5)):
        rank = score ** (1 - share) * p_lesion ** share
        assert lesion_rank.classifier_lesion(rank, score, share) == pytest.approx(p_lesion)
    assert lesion_rank.classifier_lesion(0.0, 0.5, 0.5) == 0.0


def test_with_no_classifier_the_mass_ranks_and_the_score_breaks_its_ties(lesion_rank):
    split = {"2": 0.3, "3": 0.3, "4": 0.3, "5": 0.0}  # one proposal: a box for 2 and one for 4
    sharp = {"2": 0.0, "3": 0.0, "4": 0.5, "5": 0.0}
    boxes = (Box(0, 0, 9, 9, "4", 0.5), Box(1, 1, 9, 9, "2", 0.3), Box(0, 0, 3, 3, "4", 0.35))
    detection = Detection(boxes, 20, 20, class_scores=(sharp, split, split))
    ranked = lesion_rank.ranked_by_mass(detection, 0.5)
    assert ranked.top() == boxes[2]                  # 0.9 of lesion beats 0.5, whatever the category
    assert ranked.rank_of(boxes[2]) > ranked.rank_of(boxes[1])  # equal masses: the higher score first
    assert ranked.boxes == boxes and ranked.class_scores == detection.class_scores


def test_a_whole_lesion_with_an_unsure_category_outranks_a_sharp_part_of_it(lesion_rank, tmp_path, busbra_dir):
    records = [r for r in datasets.load(f"busbra:{busbra_dir}") if r.boxes][:4]
    detections = []
    for record in records:
        whole = replace(record.boxes[0], category="3", score=0.4)
        e = record.boxes[0]  # the lesion's top-left quarter: IoU 0.25 with it
        part = Box(e.x0, e.y0, (e.x0 + e.x1) / 2, (e.y0 + e.y1) / 2, "4", 0.6)
        # the classifier calls both lesion (P 0.9); the stored rank puts the sharper part on top
        stored = tuple((b.score ** 0.5) * 0.9 ** 0.5 for b in (whole, part))
        detections.append(Detection((whole, part), record.width, record.height,
                                    class_scores=({"2": 0.3, "3": 0.4, "4": 0.25, "5": 0.0},
                                                  {"2": 0.0, "3": 0.0, "4": 0.6, "5": 0.05}),
                                    malignancy=(0.3, 0.8), ranks=stored))
    report = write_report(evaluate(records, detections, CLASSES, decision="top"), tmp_path / "r", "m", "busbra")

    result = lesion_rank.compare(report, 0.5)
    assert result["stored"]["top_box_on_lesion"] == 0.0   # the part on top in every image
    assert result["mass"]["top_box_on_lesion"] == 1.0     # mass 0.95 against 0.65: the whole lesion
    assert result["mass"]["effort_ratio"] < result["stored"]["effort_ratio"]
    # item 64: the part lies inside the whole, so the whole lesion's box is read as the part was
    placed = lesion_rank.placed_by_mass(detections[0], 0.5)
    top = placed.top()
    assert (top.x0, top.y0, top.x1, top.y1, top.category) == (*astuple(detections[0].boxes[0])[:4], "4")
    assert placed.malignancy_of(top) == 0.8 and placed.class_scores[0] == detections[0].class_scores[1]
    assert result["place"]["top_box_on_lesion"] == 1.0
    assert lesion_rank.main([str(report)]) == 0


def test_a_surest_box_elsewhere_lends_the_top_box_nothing(lesion_rank):
    lesion, elsewhere = Box(0, 0, 10, 10, "3", 0.4), Box(20, 20, 30, 30, "5", 0.6)
    detection = Detection((lesion, elsewhere), 40, 40, class_scores=({"3": 0.4, "2": 0.5}, {"5": 0.6}),
                          malignancy=(0.1, 0.9), ranks=(0.4 ** 0.5 * 0.9 ** 0.5, 0.6 ** 0.5 * 0.9 ** 0.5))
    assert detection.top() == elsewhere
    placed = lesion_rank.placed_by_mass(detection, 0.5)
    assert placed.top() == lesion and placed.malignancy_of(lesion) == 0.1  # item 63's, as it was
    assert lesion_rank.inside_share(Box(0, 0, 4, 4, "2"), Box(2, 0, 10, 10, "2")) == 0.5
