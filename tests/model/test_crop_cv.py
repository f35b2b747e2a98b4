"""scripts/crop_cv.py: a crop-classifier lever cross-validated over folds, on real BUS-BRA images."""

import json

import pytest

from tests.scripts import load_script

pytestmark = pytest.mark.slow


@pytest.fixture()
def crop_cv():
    return load_script("crop_cv")


def test_each_arm_holds_out_each_fold_in_turn_and_a_rerun_resumes(crop_cv, busbra_dir, tmp_path, capsys):
    argv = ["--data", f"busbra:{busbra_dir}", "--out", str(tmp_path), "--folds", "fold1", "fold2",
            "--epochs", "1"]
    assert crop_cv.main(argv) == 0
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert {(r["arm"], r["fold"]) for r in rows} == {(a, f) for a in crop_cv.ARMS for f in ("fold1", "fold2")}
    for row in rows:  # trained on the other fold's lesions, scored on this fold's
        assert row["crops"] > 0 and row["train_crops"] > 0 and 0 <= row["birads_accuracy"] <= 1
        assert 0 <= row["birads_accuracy_median"] <= 1  # the ordinal reading of the same softmax
        assert row["flipped"]["crops"] == row["crops"]  # the same model, each crop with its mirror image
    summary = (tmp_path / "summary.md").read_text()
    assert summary.count("mean of 2") == len(crop_cv.ARMS) and "keep-aspect" in summary and "mirror" in summary
    # Every other arm against the baseline on the same held-out folds.
    assert summary.count("better on") == 2 * (len(crop_cv.ARMS) - 1) and " pt" in summary

    capsys.readouterr()
    assert crop_cv.main(argv) == 0  # everything is done: nothing trains again
    assert len((tmp_path / "rows.jsonl").read_text().splitlines()) == 2 * len(crop_cv.ARMS)
    assert "mean of 2" in capsys.readouterr().out


def test_a_fold_without_images_is_refused(crop_cv, busbra_dir, tmp_path):
    with pytest.raises(SystemExit):
        crop_cv.main(["--data", f"busbra:{busbra_dir}", "--out", str(tmp_path), "--folds", "fold9"])
    assert not (tmp_path / "rows.jsonl").exists()


def test_rows_of_another_fold_set_or_schedule_are_not_reused(crop_cv, busbra_dir, tmp_path):
    base = ["--data", f"busbra:{busbra_dir}", "--out", str(tmp_path), "--arms", "stretch", "--epochs", "1"]
    assert crop_cv.main(base + ["--folds", "fold1", "fold2"]) == 0
    assert crop_cv.main(base + ["--folds", "fold1", "fold2", "fold3"]) == 0  # trains on more: anew
    assert crop_cv.main(base + ["--folds", "fold1", "fold2"]) == 0            # done before: reused
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert [(r["fold"], len(r["folds"])) for r in rows] == [("fold1", 2), ("fold2", 2), ("fold1", 3),
                                                              ("fold2", 3), ("fold3", 3)]
