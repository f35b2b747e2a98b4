"""scripts/category_bias.py: a per-category bias on kept class scores, read as served; no model run."""

import pytest

from model.records import Box, Detection, ImageRecord
from tests.scripts import load_script


@pytest.fixture(scope="module")
def category_bias():
    return load_script("category_bias")


def _detection(scores: dict[str, float], head: float = 0.2) -> Detection:
    return Detection((Box(10, 10, 50, 50, "4", 0.6),), 100, 100, class_scores=(scores,), malignancy=(head,),
                     ranks=(0.5,))


def test_a_bias_renames_the_box_and_keeps_its_lesion_mass_place_and_rank(category_bias):
    scores = {"2": 0.1, "3": 0.1, "4": 0.45, "5": 0.25}  # background 0.1
    plain = category_bias.biased(_detection(scores), {"2": 0.0, "3": 0.0, "5": 0.0})
    assert plain.boxes[0].category == "4" and plain.class_scores[0] == pytest.approx(scores)
    # served P(malignant): half the pathology head, half the mass at 4 or above
    assert plain.malignancy[0] == pytest.approx(0.5 * 0.2 + 0.5 * 0.7)
    pushed = category_bias.biased(_detection(scores), {"5": 1.0})
    assert pushed.boxes[0].category == "5" and sum(pushed.class_scores[0].values()) == pytest.approx(0.9)
    assert (pushed.boxes[0].score, pushed.ranks, pushed.boxes[0].x0) == (0.6, (0.5,), 10)


def test_a_served_reading_is_taken_back_to_its_pathology_head(category_bias):
    scores = {"2": 0.1, "3": 0.1, "4": 0.45, "5": 0.25}
    served = category_bias.biased(_detection(scores, head=0.3), {})
    assert category_bias.pathology_heads(served, "mean").malignancy[0] == pytest.approx(0.3)
    assert category_bias.pathology_heads(served, "pathology") == served


def test_a_patients_images_fall_in_one_half(category_bias):
    def record(name: str, patient: str) -> ImageRecord:
        return ImageRecord(name, f"/x/{name}.png", 10, 10, [], patient=patient)

    assert category_bias.half(record("a", "p1")) == category_bias.half(record("b", "p1"))
    assert {category_bias.half(record(str(n), f"p{n}")) for n in range(20)} == {0, 1}


def test_each_half_is_read_by_the_fit_of_the_other(category_bias):
    records = [ImageRecord(str(n), f"/x/{n}.png", 10, 10, [], patient=f"p{n}") for n in range(12)]
    detections = [_detection({"4": 0.5}) for _ in records]
    fit_of = lambda rs, ds: {r.patient for r in rs}  # noqa: E731 - a fit that says what it saw
    read = lambda d, seen: seen  # noqa: E731
    out, fits = category_bias.cross_read(records, detections, fit_of, read)
    assert len(fits) == 2 and fits[0].isdisjoint(fits[1]) and fits[0] | fits[1] == {r.patient for r in records}
    assert all(r.patient not in seen for r, seen in zip(records, out))
