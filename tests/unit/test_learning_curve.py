"""scripts/learning_curve.py: slopes per doubling of the training lesions and item 78's verdict."""

import json
import math

import pytest

from tests.scripts import load_script

LESIONS = {1: 375, 2: 750, 3: 1125}  # by training folds
FOLDS = ["fold4", "fold3"]


@pytest.fixture(scope="module")
def lc():
    return load_script("learning_curve")


def _row(arm, fold, n, accuracy, auc=0.8):
    experiment = {1: ["fold3", "fold4"], 2: ["fold2", "fold3", "fold4"], 3: ["fold1", "fold2", "fold3", "fold4"]}[n]
    return {"arm": arm, "fold": fold, "epochs": 90 // n, "folds": experiment, "train_crops": LESIONS[n],
            "crops": 365, "birads_accuracy": 0.5, "birads_accuracy_median": accuracy, "pathology_auc": auc,
            "wall_seconds": 600.0}


def _runs(tmp_path, accuracy, auc=lambda n: 0.80 + 0.01 * n, arms=("geometry",), sizes=(1, 2, 3)):
    """One crop_cv output per size; ``accuracy(n, arm_index)`` gives each row's figure."""
    runs = []
    for n in sizes:
        run = tmp_path / f"curve-{n}"
        run.mkdir()
        rows = [_row(arm, fold, n, accuracy(n, i), auc(n)) for i, arm in enumerate(arms) for fold in FOLDS]
        # a row of another arm and another held-out fold: not read
        rows += [{**rows[0], "arm": "stretch"}, {**rows[0], "fold": "fold1"}]
        (run / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        runs.append(run)
    return runs


def _read(lc, runs, arms=("geometry",)):
    return lc.read_rows(runs, list(arms), FOLDS)


def test_a_curve_rising_three_points_per_doubling_is_data_bound_and_extrapolated(lc, tmp_path):
    runs = _runs(tmp_path, lambda n, i: {1: 0.47, 2: 0.50, 3: 0.5175}[n])  # 375 -> 750 -> 1125 lesions
    out = tmp_path / "out"
    assert lc.main([*map(str, runs), "--out", str(out)]) == 0

    rows = _read(lc, runs)
    assert len(rows) == 6
    fit = lc.slope(lc.curve(rows, "fold4", lc.ACCURACY))
    assert fit[0] * 100 == pytest.approx(3.0, abs=0.05)  # 4.75 points over log2(1125/375) = 1.585 doublings
    assert lc.verdict(rows, FOLDS) == "data-bound"
    # the line through about 52 % at 1125 lesions reaches 60 % after about 2.75 more doublings
    assert lc.lesions_for(fit, 0.60) == pytest.approx(7579, rel=0.01)
    text = (out / "summary.md").read_text()
    assert "**data-bound**" in text and "+3.00pt" in text and "+0.0123" in text  # AUC 0.81, 0.82, 0.83
    assert "7,579" in text  # fold 4's extrapolation, printed only where data-bound
    assert (out / "curve.png").stat().st_size > 0


def test_the_thresholds_split_three_verdicts(lc, tmp_path):
    def at(per_doubling):  # accuracy rising by ``per_doubling`` points per doubling, on both folds
        rows = [_row("geometry", fold, n, 0.5 + per_doubling / 100 * math.log2(LESIONS[n] / 375))
                for fold in FOLDS for n in LESIONS]
        return lc.verdict(rows, FOLDS)

    assert at(2.05) == "data-bound"
    assert at(1.5) == "undecided"
    assert at(0.9) == "at its ceiling"


def test_seeds_are_averaged_and_a_flat_curve_is_at_its_ceiling(lc, tmp_path):
    # two seeds: 0.52 and 0.53 at every size, the mean flat
    runs = _runs(tmp_path, lambda n, i: 0.52 + 0.01 * i, arms=("geometry", "geometry-seed-43"))
    rows = _read(lc, runs, ("geometry", "geometry-seed-43"))
    points = lc.curve(rows, "fold4", lc.ACCURACY)
    assert points == [(375, pytest.approx(0.525)), (750, pytest.approx(0.525)), (1125, pytest.approx(0.525))]
    assert lc.verdict(rows, FOLDS) == "at its ceiling"
    assert lc.lesions_for(lc.slope(points), 0.60) is None


def test_a_seed_missing_a_size_is_left_out_of_the_means(lc, tmp_path):
    runs = _runs(tmp_path, lambda n, i: {1: 0.47, 2: 0.50, 3: 0.5175}[n])
    rows = _read(lc, runs) + [_row("geometry-seed-43", "fold4", 3, 0.40)]  # seed 43 at 3 folds only
    assert lc.curve(rows, "fold4", lc.ACCURACY)[-1] == (1125, pytest.approx(0.5175))
    assert lc.verdict(rows, FOLDS) == "data-bound"


def test_a_fall_from_two_to_three_folds_reads_as_the_ceiling_and_mixed_folds_are_undecided(lc, tmp_path):
    rows = _read(lc, _runs(tmp_path, lambda n, i: {1: 0.40, 2: 0.55, 3: 0.54}[n]))  # steep, then down
    assert lc.slope(lc.curve(rows, "fold4", lc.ACCURACY))[0] * 100 > 2
    assert lc.read_slope(lc.curve(rows, "fold4", lc.ACCURACY)) == 0.0
    assert lc.verdict(rows, FOLDS) == "at its ceiling"
    assert "falls 2 -> 3 folds" in lc.summary(rows, FOLDS)

    rising = [r for r in rows if r["fold"] == "fold4"] + [
        _row("geometry", "fold3", n, a) for n, a in zip(LESIONS, (0.40, 0.45, 0.50))]
    assert lc.verdict(rising, FOLDS) == "undecided"


def test_a_missing_fold_or_size_leaves_the_verdict_undecided(lc, tmp_path):
    runs = _runs(tmp_path, lambda n, i: {1: 0.47, 3: 0.5175}[n], sizes=(1, 3))  # no 2-fold run
    rows = _read(lc, runs)
    assert lc.verdict(rows, FOLDS).startswith("undecided: fold4")
    only_fold4 = [r for r in rows if r["fold"] == "fold4"] + [_row("geometry", "fold4", 2, 0.50)]
    assert lc.verdict(only_fold4, FOLDS) == "undecided: fold3 lacks a size"
    text = lc.summary(only_fold4 + [{**_row("geometry", "fold3", 1, 0.5), "birads_accuracy_median": None}], FOLDS)
    assert "n/a" in text


def test_a_folder_without_rows_twice_or_mixed_is_refused(lc, tmp_path):
    with pytest.raises(SystemExit, match="no rows.jsonl"):
        lc.main([str(tmp_path), "--out", str(tmp_path / "out")])
    runs = _runs(tmp_path, lambda n, i: 0.5)
    with pytest.raises(SystemExit, match="read twice"):
        _read(lc, [runs[0], runs[0]])
    with (runs[0] / "rows.jsonl").open("a") as f:
        f.write(json.dumps({**_row("geometry", "fold4", 1, 0.5), "epochs": 30}) + "\n")
    with pytest.raises(SystemExit, match="more than one experiment"):
        _read(lc, [runs[0]])
