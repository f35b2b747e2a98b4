"""Which parent classes a fine-tuned detector's classes start from (model.class_rows); the rows
themselves are checked on real trained models in tests/model/test_training.py."""

from model.class_rows import parent_classes_of

COARSE = ["2", "3", "4", "5"]
FINE = ["2", "3", "4A", "4B", "4C", "5"]


def test_the_second_model_keeps_its_parents_2_3_and_5():
    assert parent_classes_of(COARSE, ["2", "3", "5"]) == {"2": ["2"], "3": ["3"], "5": ["5"]}


def test_subcategories_of_4_start_as_the_parents_4():
    assert parent_classes_of(COARSE, FINE) == {"2": ["2"], "3": ["3"], "4A": ["4"], "4B": ["4"],
                                               "4C": ["4"], "5": ["5"]}


def test_plain_4_starts_as_the_mean_of_the_parents_subcategories():
    assert parent_classes_of(FINE, COARSE)["4"] == ["4A", "4B", "4C"]


def test_a_class_the_parent_never_had_keeps_its_random_rows():
    assert parent_classes_of(["2", "3", "5"], COARSE) == {"2": ["2"], "3": ["3"], "5": ["5"]}
