"""scripts/learning_curve.py: slopes per doubling of the training lesions and item 78's verdict."""

import json

import pytest

from tests.scripts import load_script

SIZES = {1: 375, 2: 750, 3: 1125}


@pytest.fixture(scope="module")
def lc():
    return load_script("learning_curve")


def _runs(tmp_path, accuracy, auc=lambda folds: 0.80 + 0.01 * folds, arms=("geometry",), folds=("fold4", "fold3")):
    """One crop_cv output per size; ``accuracy(folds, arm_index)`` gives each row's figure."""
    runs = []
    for n, lesions in SIZES.items():
        run = tmp_path / f"curve-{n}"
        run.mkdir()
        rows = [{"arm": arm, "fold": fold, "epochs": 90 // n, "train_crops": lesions, "crops": 365,
                 "birads_accuracy": 0.5, "birads_accuracy_median": accuracy(n, i), "pathology_auc": auc(n),
                 "wall_seconds": 600.0}
                for i, arm in enumerate(arms) for fold in folds]
        # a row of another arm and another held-out fold: not read
        rows += [{**rows[0], "arm": "stretch"}, {**rows[0], "fold": "fold1"}]
        (run / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        runs.append(run)
    return runs


def test_a_curve_rising_three_points_per_doubling_is_data_bound_and_extrapolated(lc, tmp_path):
    runs = _runs(tmp_path, lambda n, i: {1: 0.47, 2: 0.50, 3: 0.5175}[n])  # 375 -> 750 -> 1125 lesions
    out = tmp_path / "out"
    assert lc.main([*map(str, runs), "--out", str(out)]) == 0

    rows = lc.read_rows(runs, ["geometry"], ["fold4", "fold3"])
    assert len(rows) == 6
    fit = lc.slope(lc.curve(rows, lc.ACCURACY)["fold4"])
    assert fit[0] * 100 == pytest.approx(3.0, abs=0.05)  # 4.75 points over log2(1125/375) = 1.585 doublings
    assert lc.verdict(lc.curve(rows, lc.ACCURACY)) == "data-bound"
    # the line through about 52 % at 1125 lesions reaches 60 % after about 2.8 more doublings
    assert lc.lesions_for(fit, 0.60) == pytest.approx(2 ** ((0.60 - fit[1]) / fit[0]))
    assert lc.lesions_for(fit, 0.60) > 1125 * 2
    text = (out / "summary.md").read_text()
    assert "**data-bound**" in text and "+3.00pt" in text and "+0.0123" in text  # AUC 0.81, 0.82, 0.83
    assert (out / "curve.png").stat().st_size > 0


def test_seeds_are_averaged_and_a_flat_curve_is_at_its_ceiling(lc, tmp_path):
    # two seeds: 0.52 and 0.53 at every size, the mean flat
    runs = _runs(tmp_path, lambda n, i: 0.52 + 0.01 * i, arms=("geometry", "geometry-seed-43"))
    rows = lc.read_rows(runs, ["geometry", "geometry-seed-43"], ["fold4", "fold3"])
    points = lc.curve(rows, lc.ACCURACY)["fold4"]
    assert points == [(375, pytest.approx(0.525)), (750, pytest.approx(0.525)), (1125, pytest.approx(0.525))]
    assert lc.verdict(lc.curve(rows, lc.ACCURACY)) == "at its ceiling"
    assert lc.lesions_for(lc.slope(points), 0.60) is None


def test_a_fall_from_two_to_three_folds_reads_as_the_ceiling_and_mixed_folds_are_undecided(lc, tmp_path):
    runs = _runs(tmp_path, lambda n, i: {1: 0.40, 2: 0.55, 3: 0.54}[n])  # steep, then down
    rows = lc.read_rows(runs, ["geometry"], ["fold4", "fold3"])
    assert lc.slope(lc.curve(rows, lc.ACCURACY)["fold4"])[0] * 100 > 2
    assert lc.verdict(lc.curve(rows, lc.ACCURACY)) == "at its ceiling"

    mixed = lc.curve(rows, lc.ACCURACY) | {"fold3": [(375, 0.40), (750, 0.45), (1125, 0.50)]}
    assert lc.verdict(mixed) == "undecided"
    assert lc.verdict({"fold4": [(1125, 0.5)]}).startswith("undecided")


def test_a_folder_without_rows_is_refused(lc, tmp_path):
    with pytest.raises(SystemExit, match="no rows.jsonl"):
        lc.main([str(tmp_path), "--out", str(tmp_path / "out")])
