import pytest

from model import taxonomy


@pytest.mark.parametrize("raw, canonical", [
    ("4a", "4A"), ("BI-RADS 4B", "4B"), ("birads 5", "5"), (3, "3"), ("4.0", "4"), (" 2 ", "2")])
def test_normalize(raw, canonical):
    assert taxonomy.normalize(raw) == canonical


@pytest.mark.parametrize("raw", ["6", "4D", "", "benign", None])
def test_normalize_rejects_unknown(raw):
    with pytest.raises(taxonomy.UnknownCategory):
        taxonomy.normalize(raw)


def test_roll_up_subcategories_to_4_only_when_needed():
    assert taxonomy.roll_up("4B", taxonomy.COARSE) == "4"
    assert taxonomy.roll_up("4B", taxonomy.FULL) == "4B"
    assert taxonomy.roll_up("5", taxonomy.COARSE) == "5"
    with pytest.raises(taxonomy.UnknownCategory):
        taxonomy.roll_up("4", taxonomy.FULL)  # plain 4 cannot be split


def test_malignancy_threshold_counts_subcategories_as_4():
    assert [taxonomy.is_malignant(c) for c in taxonomy.FULL] == [False, False, False, True, True, True, True]
    assert taxonomy.is_malignant("4", "4B") is False
    assert taxonomy.is_malignant("4C", "4B") is True
    assert taxonomy.is_malignant("3", "3") is True


def test_image_category_is_most_suspicious_box_and_1_without_boxes():
    assert taxonomy.image_category([]) == "1"
    assert taxonomy.image_category(["2", "4A", "3"]) == "4A"
    assert taxonomy.image_category(["4C", "5"]) == "5"


def test_label_sets_and_detector_classes():
    assert taxonomy.label_set_for(["2", "4", "5"]) == taxonomy.COARSE
    assert taxonomy.label_set_for(["2", "4A", "5"]) == taxonomy.FULL
    assert taxonomy.label_set_for(["4", "4A"]) == taxonomy.COARSE
    assert taxonomy.detector_classes(taxonomy.FULL) == ["2", "3", "4A", "4B", "4C", "5"]
    # a project's: its config's, or where that names 4 and 4A/4B/4C both, what its boxes need
    both = ["2", "3", "4", "4A", "4B", "4C", "5"]
    assert taxonomy.project_label_set(both, ["3", "4A", "4C"]) == taxonomy.FULL
    assert taxonomy.project_label_set(both, ["3", "4A", "4"]) == taxonomy.COARSE  # one unrefined 4
    assert taxonomy.project_label_set(both, ["2", "5"]) == taxonomy.COARSE
    assert taxonomy.project_label_set(["2", "4A", "4B", "5"], ["2"]) == taxonomy.FULL
    assert taxonomy.project_label_set(["2", "4", "5"], ["2"]) == taxonomy.COARSE
    assert taxonomy.names("4A", taxonomy.COARSE) and not taxonomy.names("4", taxonomy.FULL)  # up, never down
    assert all(c in taxonomy.MEANING for c in taxonomy.FULL + taxonomy.COARSE)


def test_median_category_reads_the_softmax_in_rank_order():
    # argmax says 2, but most of the mass lies at 4 or above: the median is 4
    assert taxonomy.median_category({"5": 0.25, "2": 0.4, "4": 0.35}) == "4"
    assert taxonomy.median_category({"2": 0.6, "3": 0.2, "5": 0.2}) == "2"
    assert taxonomy.median_category({"4A": 0.25, "3": 0.2, "4C": 0.55}) == "4C"  # 4A ranks below 4C
    with pytest.raises(ValueError):
        taxonomy.median_category({})
