"""4A/4B/4C from a model trained without BI-RADS 4, on constructed score vectors."""

import pytest

from model.subcategory import DEFAULT_CUTS, fit_cuts, malignancy_likeness, subcategory


@pytest.mark.parametrize("scores, likeness, expected", [
    ({"2": 0.60, "3": 0.35, "5": 0.05}, 0.05, "4A"),       # benign-looking
    ({"2": 0.20, "3": 0.50, "5": 0.30}, 0.30, "4B"),
    ({"2": 0.05, "3": 0.15, "5": 0.80}, 0.80, "4C"),       # malignant-looking
    ({"2": 0.10, "3": 0.10, "5": 0.20}, 0.50, "4C"),       # background mass is left out
    ({"2": 0.0, "3": 0.0, "5": 0.0}, 0.5, "4C"),           # nothing to go on: undecided
])
def test_likeness_and_default_cuts(scores, likeness, expected):
    assert malignancy_likeness(scores) == pytest.approx(likeness)
    assert subcategory(malignancy_likeness(scores)) == expected


def test_cuts_are_the_bi_rads_ranges_by_default():
    assert DEFAULT_CUTS == (0.10, 0.50)
    assert [subcategory(x) for x in (0.0, 0.0999, 0.10, 0.4999, 0.5, 1.0)] == ["4A", "4A", "4B", "4B", "4C", "4C"]


def test_fit_cuts_separates_uncalibrated_scores():
    # A model whose scores are squeezed into 0.3-0.6: the default cuts call everything 4B/4C.
    likeness = [0.30, 0.32, 0.35, 0.45, 0.47, 0.58, 0.60]
    truth = ["4A", "4A", "4A", "4B", "4B", "4C", "4C"]
    cuts = fit_cuts(likeness, truth)
    assert [subcategory(x, cuts) for x in likeness] == truth
    assert sum(subcategory(x) == t for x, t in zip(likeness, truth)) < len(truth)


def test_splitter_relabels_only_bi_rads_4_boxes_by_the_second_model():
    from model.records import Box, Detection
    from model.subcategory import SubcategorySplitter

    first = Detection((Box(10, 10, 50, 50, "4", 0.9), Box(60, 60, 90, 90, "3", 0.8),
                       Box(100, 100, 120, 120, "4", 0.7)), 200, 200)
    second = Detection((Box(12, 11, 51, 49, "5", 0.6), Box(61, 60, 90, 91, "2", 0.9)), 200, 200,
                       class_scores=({"2": 0.1, "3": 0.2, "5": 0.6}, {"2": 0.9, "3": 0.05, "5": 0.01}))
    split = SubcategorySplitter().split(first, second)
    assert [b.category for b in split.boxes] == ["4C", "3", "4"]  # 0.6/0.9 = 0.67 -> 4C; no match -> 4
    assert split.boxes[0].score == 0.9 and (split.width, split.height) == (200, 200)


def test_cuts_fitted_on_expert_boxes_travel_with_the_second_model(tmp_path):
    from model.records import Box, Detection, ImageRecord
    from model.subcategory import fit_on_records, load_cuts, save_cuts

    def lesion(category: str, likeness: float | None):
        record = ImageRecord(category, "p", 100, 100, [Box(10, 10, 50, 50, category)], birads=category)
        if likeness is None:  # the second model found nothing there
            return record, Detection((Box(60, 60, 90, 90, "2", 0.9),), 100, 100, ({"2": 1.0, "3": 0, "5": 0},))
        scores = {"2": 1 - likeness, "3": 0.0, "5": likeness}
        return record, Detection((Box(11, 10, 50, 51, "5", 0.8),), 100, 100, (scores,))

    pairs = [lesion("4A", 0.30), lesion("4A", 0.32), lesion("4B", 0.45), lesion("4C", 0.60),
             lesion("4C", None), lesion("2", 0.05)]  # unmatched and non-4 lesions are not fitted on
    fitted = fit_on_records([r for r, _ in pairs], [d for _, d in pairs])
    assert fitted["lesions"] == 4 and fitted["right"] == 4
    assert fitted["cuts"] == pytest.approx([0.385, 0.525])  # halfway between neighbouring lesions
    assert "too few" in fitted["warning"]
    assert load_cuts(tmp_path) == DEFAULT_CUTS  # nothing fitted yet
    save_cuts(tmp_path, fitted)
    assert load_cuts(tmp_path) == tuple(fitted["cuts"])
    with pytest.raises(ValueError, match="nothing to fit"):
        fit_on_records([pairs[-1][0]], [pairs[-1][1]])


def test_only_a_model_without_bi_rads_4_may_split_it():
    from model.io import DataError
    from model.subcategory import require_second_model

    require_second_model(["2", "3", "5"], "second")
    with pytest.raises(DataError, match="trained with BI-RADS 4"):
        require_second_model(["2", "3", "4", "5"], "first")
