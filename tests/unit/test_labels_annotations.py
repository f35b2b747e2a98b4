"""Label config mapping and the experts' consensus (model.regions), no services."""

from pathlib import Path

import pytest

from backend.labels import LabelConfigError, parse_label_config
from model.records import Box
from model.regions import consensus, convert

IMAGE = '<Image name="img" value="$scan"/>'


def _config(labels: str) -> str:
    return f'<View>{IMAGE}<RectangleLabels name="lesion" toName="img">{labels}</RectangleLabels></View>'


def test_maps_labels_by_text_case_and_prefix():
    labels = parse_label_config(_config('<Label value="BI-RADS 2"/><Label value="birads 4a"/><Label value="5"/>'))
    assert (labels.from_name, labels.to_name, labels.data_key) == ("lesion", "img", "scan")
    assert labels.label_for("2") == "BI-RADS 2" and labels.label_for("4A") == "birads 4a"
    assert labels.label_for("5") == "5"
    assert labels.label_for("3") is None and labels.label_for("4B") is None  # never invent a label


def test_predicted_values_and_roll_up_to_plain_4():
    labels = parse_label_config(_config('<Label value="Suspicious" predicted_values="4"/>'
                                        '<Label value="Benign" predicted_values="2,3"/>'))
    assert labels.label_for("4C") == "Suspicious" and labels.label_for("4") == "Suspicious"
    assert labels.label_for("3") == "Benign" and labels.category_of("Benign") == "2"


def test_the_recommended_config_names_every_category_a_model_predicts():
    """docs/label_config.xml: a model trained on BUS-BRA names plain 4 (the backend does not split
    it), so the config needs a plain 4 beside 4A/4B/4C, or such boxes would never be shown."""
    labels = parse_label_config((Path(__file__).parents[2] / "docs" / "label_config.xml").read_text())
    named = {category: labels.label_for(category) for category in ("2", "3", "4", "4A", "4B", "4C", "5")}
    assert named == {"2": "BI-RADS 2", "3": "BI-RADS 3", "4": "BI-RADS 4", "4A": "BI-RADS 4A",
                     "4B": "BI-RADS 4B", "4C": "BI-RADS 4C", "5": "BI-RADS 5"}


def test_a_label_with_an_alias_keeps_its_category_and_is_written_by_its_alias():
    """Label Studio writes a label's alias into results: the category comes from its value."""
    labels = parse_label_config(_config('<Label value="BI-RADS 3" alias="b3"/><Label value="BI-RADS 5"/>'))
    assert labels.label_for("3") == "b3" and labels.category_of("b3") == "3"
    assert labels.category_of("BI-RADS 3") == "3"   # annotated before the alias was added
    assert labels.label_for("5") == "BI-RADS 5"


def test_a_bi_rads_code_in_the_alias_or_beside_another_backends_predicted_values_is_read():
    labels = parse_label_config(_config('<Label value="Probably benign" alias="BI-RADS 3"/>'
                                        '<Label value="BI-RADS 4" predicted_values="mass"/>'))
    assert labels.label_for("3") == "BI-RADS 3" and labels.category_of("BI-RADS 3") == "3"
    assert labels.category_of("Probably benign") == "3"
    assert labels.label_for("4") == "BI-RADS 4" and labels.category_of("BI-RADS 4") == "4"


def test_rectangle_labels_for_something_else_are_passed_over():
    config = (f'<View>{IMAGE}<RectangleLabels name="marks" toName="img"><Label value="Caliper"/></RectangleLabels>'
              '<RectangleLabels name="lesion" toName="img"><Label value="BI-RADS 3"/></RectangleLabels></View>')
    labels = parse_label_config(config)
    assert labels.from_name == "lesion" and labels.label_for("3") == "BI-RADS 3"


@pytest.mark.parametrize("config, message", [
    (f"<View>{IMAGE}</View>", "no RectangleLabels bound to an Image"),
    ('<View><Text name="t" value="$t"/><RectangleLabels name="l" toName="t"><Label value="2"/>'
     "</RectangleLabels></View>", "no RectangleLabels bound to an Image"),
    (_config('<Label value="Cyst"/>'), "has no BI-RADS labels"),
    ("<View><Image", "not valid XML"),
    ("", "empty label config"),
    (_config('<Label value="BI-RADS 3"/>').replace('value="$scan"', 'valueList="$scans"'), "only one image per task"),
    (_config('<Label value="BI-RADS 3"/>').replace('value="$scan"', 'value="$scan.url"'), "only one image per task"),
])
def test_unusable_configs(config, message):
    with pytest.raises(LabelConfigError, match=message):
        parse_label_config(config)


def _annotation(*boxes, cancelled=False, truth=False):
    return {"was_cancelled": cancelled, "ground_truth": truth, "result": [
        {"type": "rectanglelabels", "from_name": "lesion", "value": {
            "x": x, "y": y, "width": w, "height": h, "rectanglelabels": [label]}} for x, y, w, h, label in boxes]}


LABELS = parse_label_config(_config('<Label value="BI-RADS 3"/><Label value="BI-RADS 4"/><Label value="Cyst"/>'
                                    ' <Label value="BI-RADS 5"/>'))


def test_consensus_needs_min_agreement_same_category_and_overlap():
    a = [Box(10, 10, 30, 30, "3")]
    b = [Box(11, 10, 31, 31, "3"), Box(60, 60, 70, 70, "5")]
    c = [Box(12, 12, 32, 30, "4")]
    agreed = consensus([a, b, c], min_agreement=2)
    assert len(agreed) == 1 and agreed[0].category == "3"
    assert agreed[0].x0 == pytest.approx(10.5)
    assert consensus([a, c], min_agreement=2) == []


def test_convert_tasks_single_truth_cancelled_and_disagreement():
    tasks = [
        {"id": 1, "annotations": [_annotation((10, 10, 20, 20, "BI-RADS 3"))]},
        {"id": 2, "annotations": [_annotation((10, 10, 20, 20, "BI-RADS 3")),
                                  _annotation((50, 50, 20, 20, "BI-RADS 5"), truth=True)]},
        {"id": 3, "annotations": [_annotation((10, 10, 20, 20, "BI-RADS 3")),
                                  _annotation((60, 60, 20, 20, "BI-RADS 4"))]},
        {"id": 4, "annotations": [_annotation((10, 10, 20, 20, "BI-RADS 3"), cancelled=True)]},
        {"id": 5, "annotations": [_annotation((10, 10, 20, 20, "Cyst"), (30, 30, 10, 10, "BI-RADS 4"))]},
        {"id": 6, "annotations": [_annotation((10, 10, 20, 20, "BI-RADS 3"), cancelled=True), _annotation()]},
        {"id": 7, "annotations": [_annotation(), _annotation()]},
        {"id": 8, "annotations": [_annotation((10, 10, 20, 20, "Cyst"))]},
        {"id": 9, "annotations": [_annotation((10, 10, 20, 20, "BI-RADS 3")), _annotation()]},
        {"id": 10, "annotations": [{"result": [{"type": "rectanglelabels", "value": {"x": "?"}}]}]},
    ]
    result = convert(tasks, LABELS.category_of, 2, LABELS.from_name)
    by_id = {t.task_id: t for t in result.tasks}
    assert by_id[1].status == "ok" and by_id[1].boxes == [Box(10, 10, 30, 30, "3")]
    assert by_id[2].boxes == [Box(50, 50, 70, 70, "5")]             # ground truth wins
    assert by_id[3].status == "no_agreement"
    assert by_id[4].status == "no_annotation"                       # cancelled: skipped
    assert by_id[5].status == "no_annotation"   # the Cyst would train as background: says nothing
    assert by_id[6].status == "ok" and by_id[6].boxes == []          # submitted empty: "no lesion"
    assert by_id[7].status == "ok" and by_id[7].boxes == []          # two experts agree: no lesion
    assert by_id[8].status == "no_annotation"                       # only unknown labels: says nothing
    assert by_id[9].status == "no_agreement"                        # a lesion against "no lesion"
    assert result.unknown_labels == {"Cyst": 2}
    assert by_id[10].status == "malformed" and "result[0]" in by_id[10].detail
    assert result.for_review == [3, 9, 10]
    assert [t.task_id for t in result.usable] == [1, 2, 6, 7]


def test_an_annotator_with_two_annotations_of_a_task_counts_once():
    """Label Studio lets one user add a second annotation: it is no second expert agreeing."""
    def by(user, *boxes, **more):
        return dict(_annotation(*boxes), completed_by=user, **more)

    lesion, other = (10, 10, 20, 20, "BI-RADS 3"), (60, 60, 20, 20, "BI-RADS 4")
    tasks = [{"id": 1, "annotations": [by(5, lesion, id=1), by(5, lesion, id=2), by({"id": 6}, other, id=3)]},
             {"id": 2, "annotations": [by(5, other, id=4, updated_at="2026-12-06T08:00:00.500000Z"),
                                       by(5, lesion, id=5, updated_at="2026-12-06T08:00:00Z")]}]
    tasks.append({"id": 3, "annotations": [by(5, lesion, id=6, ground_truth=True), by(5, other, id=7),
                                           by(6, other, id=8)]})
    one, two, three = convert(tasks, LABELS.category_of, 2, LABELS.from_name).tasks
    assert one.status == "no_agreement" and one.annotators == 2
    assert two.annotators == 1 and two.boxes == [Box(60, 60, 80, 80, "4")]   # the latest, not the last listed
    assert three.boxes == [Box(10, 10, 30, 30, "3")]                         # their ground truth wins
    # what each task's boxes stand for, recorded with the version trained on them
    assert (one.annotations, two.annotations, three.annotations) == ([2, 3], [4], [6])


def test_agreed_boxes_stand_for_every_annotation_that_was_weighed():
    def by(user, number, *boxes):
        return dict(_annotation(*boxes), completed_by=user, id=number)

    lesion = (10, 10, 20, 20, "BI-RADS 3")
    tasks = [{"id": 1, "annotations": [by(1, 11, lesion), by(2, 12, lesion), by(3, 13, (60, 60, 9, 9, "BI-RADS 5"))]},
             {"id": 2, "annotations": [by(1, 21), by(2, 22)]},
             {"id": 3, "annotations": [by(1, 31, (10, 10, 20, 20, "Cyst")), by(2, 32, lesion)]}]
    agreed, no_lesion, one_says = convert(tasks, LABELS.category_of, 2, LABELS.from_name).tasks
    assert agreed.boxes == [Box(10, 10, 30, 30, "3")] and agreed.annotations == [11, 12, 13]
    assert no_lesion.status == "ok" and no_lesion.annotations == [21, 22]
    assert one_says.annotations == [32]  # the Cyst says nothing: one expert's boxes


def test_a_rotated_rectangle_trains_as_the_upright_box_around_it():
    """Label Studio turns a rectangle clockwise about its top-left corner, in pixels: on a 200 x 100
    image, 20 % x 10 % (40 x 10 px) at (50 %, 20 %) turned 90 degrees stands 10 px wide, 40 px tall
    to the left of (100, 20) px."""
    region = {"type": "rectanglelabels", "from_name": "lesion", "original_width": 200, "original_height": 100,
              "value": {"x": 50, "y": 20, "width": 20, "height": 10, "rotation": 90,
                        "rectanglelabels": ["BI-RADS 3"]}}
    task = {"id": 1, "annotations": [{"result": [region]}]}
    (box,) = convert([task], LABELS.category_of, 2, LABELS.from_name).tasks[0].boxes
    assert (box.x0, box.y0, box.x1, box.y1) == pytest.approx((45, 20, 50, 60))
    region["value"]["rotation"] = 45                      # a diagonal: the box around its corners
    (box,) = convert([task], LABELS.category_of, 2, LABELS.from_name).tasks[0].boxes
    assert box.x0 < 50 < box.x1 and box.y0 == pytest.approx(20) and box.x1 == pytest.approx(50 + 40 * 0.5 ** 0.5 / 2)
    region["value"]["rotation"] = 360                     # a full turn is upright
    assert convert([task], LABELS.category_of, 2).tasks[0].boxes == [Box(50, 20, 70, 30, "3")]
    del region["original_width"], region["original_height"]
    region["value"]["rotation"] = 30                      # cannot be turned without the image's size
    assert convert([task], LABELS.category_of, 2).tasks[0].status == "malformed"


def test_a_bi_rads_1_rectangle_marks_no_lesion():
    labels = parse_label_config(_config('<Label value="BI-RADS 1"/><Label value="BI-RADS 3"/>'))
    tasks = [{"id": 1, "annotations": [_annotation((10, 10, 20, 20, "BI-RADS 1"))]},
             {"id": 2, "annotations": [_annotation((10, 10, 20, 20, "BI-RADS 1"), (50, 50, 10, 10, "BI-RADS 3"))]}]
    one, two = convert(tasks, labels.category_of, 2, labels.from_name).tasks
    assert one.status == "ok" and one.boxes == []          # a negative image, not a lesion of class 1
    assert two.boxes == [Box(50, 50, 60, 60, "3")]


def test_regions_show_what_show_boxes_asks_for():
    from backend.detector import regions
    from backend.settings import Settings
    from model.records import Detection

    labels = parse_label_config(_config('<Label value="BI-RADS 3"/><Label value="BI-RADS 4"/>'))
    detection = Detection((Box(10, 10, 50, 50, "4", 0.3), Box(60, 10, 90, 50, "3", 0.2)), 100, 100)
    assert regions(detection, labels, 0.5, 5) == []
    top = regions(detection, labels, 0.5, 5, "top1")
    assert [(r["value"]["rectanglelabels"], r["score"]) for r in top] == [(["BI-RADS 4"], 0.3)]
    assert top[0]["value"]["x"] == pytest.approx(10) and top[0]["value"]["width"] == pytest.approx(40)
    assert len(regions(detection, labels, 0.1, 5, "top1")) == 2
    assert len(regions(detection, labels, 0.1, 1, "threshold")) == 1  # MAX_BOXES still caps
    with pytest.raises(ValueError, match="SHOW_BOXES"):
        Settings(show_boxes="all")


def test_the_task_score_is_the_confidence_in_the_boxes_shown():
    from backend.detector import prediction
    from backend.settings import Settings
    from model.records import Detection

    labels = parse_label_config(_config('<Label value="BI-RADS 3"/><Label value="BI-RADS 4"/>'))
    weak = Detection((Box(10, 10, 50, 50, "4", 0.3), Box(60, 10, 90, 50, "3", 0.2)), 100, 100)
    # top1-only shows the 0.3 box: the task scores 0.3 (least sure first), not 1 - 0.3 as if hidden
    shown = prediction(weak, labels, Settings(show_boxes="top1-only", score_threshold=0.5), "v1")
    assert [r["score"] for r in shown["result"]] == [0.3] and shown["score"] == 0.3
    assert shown["model_version"] == "v1"
    assert prediction(weak, labels, Settings(show_boxes="threshold", score_threshold=0.5), "v1")["score"] == 0.7
    # a box the config cannot name is not shown, and the task is scored as showing nothing
    unnamed = Detection((Box(10, 10, 50, 50, "5", 0.9),), 100, 100)
    dropped = prediction(unnamed, labels, Settings(show_boxes="top1-only", score_threshold=0.5), "v1")
    assert dropped["result"] == [] and dropped["score"] == pytest.approx(0.1)


def test_each_regions_meta_text_carries_its_own_boxs_malignancy():
    from backend.detector import regions
    from model.records import Detection
    from model.regions import malignancy_note

    labels = parse_label_config(_config('<Label value="BI-RADS 3"/><Label value="BI-RADS 4"/>'))
    boxes = (Box(10, 10, 50, 50, "4", 0.9), Box(60, 10, 90, 50, "3", 0.7), Box(5, 60, 30, 90, "3", 0.2))
    detection = Detection(boxes, 100, 100, malignancy=(0.81, 0.05, 0.5))
    shown = regions(detection, labels, 0.5, 5)
    assert [r["meta"]["text"] for r in shown] == [[malignancy_note(0.81)], [malignancy_note(0.05)]]
    assert malignancy_note(0.81) == "P(malignant) 0.81, model estimate"
    # a box shown because it is the most confident one keeps its own figure, not its neighbour's
    only = Detection(boxes[2:], 100, 100, malignancy=(0.5,))
    assert [r["meta"]["text"] for r in regions(only, labels, 0.5, 5, "top1")] == [[malignancy_note(0.5)]]
    # a model without a box classifier gives no meta at all
    plain = Detection(boxes, 100, 100)
    assert all("meta" not in r for r in regions(plain, labels, 0.5, 5))


def test_a_region_with_several_labels_takes_its_one_bi_rads_category():
    """choice="multiple": "Calcified" beside "BI-RADS 4A" leaves the region its category; two
    categories on one region, or none, say nothing (the lesion would train as background)."""
    labels = parse_label_config(_config('<Label value="Calcified"/><Label value="BI-RADS 4A"/>'
                                        '<Label value="BI-RADS 3"/>'))

    def task(number: int, *names: str) -> dict:
        region = {"type": "rectanglelabels", "from_name": "lesion",
                  "value": {"x": 10, "y": 10, "width": 20, "height": 20, "rectanglelabels": list(names)}}
        return {"id": number, "annotations": [{"was_cancelled": False, "ground_truth": False, "result": [region]}]}

    result = convert([task(1, "Calcified", "BI-RADS 4A"), task(2, "BI-RADS 3", "BI-RADS 4A"), task(3, "Calcified"),
                      task(4)], labels.category_of, 1, labels.from_name)
    by_id = {t.task_id: t for t in result.tasks}
    assert by_id[1].status == "ok" and by_id[1].boxes == [Box(10, 10, 30, 30, "4A")]
    assert by_id[2].status == by_id[3].status == "no_annotation"
    assert result.unknown_labels == {"BI-RADS 3 + BI-RADS 4A": 1, "Calcified": 1}
    assert by_id[4].status == "malformed"  # a region without a label
