"""scripts/crop_cv.py: a crop-classifier lever cross-validated over folds, on real BUS-BRA images."""

import json
from dataclasses import replace

import pytest

from tests.scripts import load_script

pytestmark = pytest.mark.slow


@pytest.fixture()
def crop_cv():
    return load_script("crop_cv")


def test_each_arm_holds_out_each_fold_in_turn_and_a_rerun_resumes(crop_cv, busbra_dir, tmp_path, capsys,
                                                                  monkeypatch):
    argv = ["--data", f"busbra:{busbra_dir}", "--out", str(tmp_path), "--folds", "fold1", "fold2",
            "--epochs", "1"]
    assert crop_cv.main(argv) == 0
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    # an ensemble's run files its members' rows too (a seed's plain learner only once)
    arms = list(dict.fromkeys([*crop_cv.ARMS, *crop_cv.MEMBER_ARMS]))
    assert sorted((r["arm"], r["fold"]) for r in rows) == sorted((a, f) for a in arms for f in ("fold1", "fold2"))
    for row in rows:  # trained on the other fold's lesions, scored on this fold's
        assert row["crops"] > 0 and row["train_crops"] > 0 and 0 <= row["birads_accuracy"] <= 1
        assert 0 <= row["birads_accuracy_median"] <= 1  # the ordinal reading of the same softmax
        assert row["flipped"]["crops"] == row["crops"]  # the same model, each crop with its mirror image
        # where it trained and in which number format: an experiment's folds may come from two machines
        device = crop_cv.resolve_device("auto")
        assert row["device"] == device and row["bf16"] == crop_cv.use_bf16(True, device)
        assert row["cpu"] == crop_cv.cpu_name()
    summary = (tmp_path / "summary.md").read_text()
    assert summary.count("mean of 2") == len(arms) and "keep-aspect" in summary and "mirror" in summary
    # Every other arm against the baseline on the same held-out folds.
    # (argmax, median reading, AUC; an ensemble's rows against its own default-seed member)
    assert summary.count("better on") == 3 * (len(arms) - 1) and " pt" in summary

    capsys.readouterr()
    assert crop_cv.main(argv) == 0  # everything is done: nothing trains again
    assert len((tmp_path / "rows.jsonl").read_text().splitlines()) == 2 * len(arms)
    assert "mean of 2" in capsys.readouterr().out

    # An ensemble's fold stopped before its row, after two of its members: only the third trains.
    [ensemble] = [r for r in rows if r["arm"] == "ensemble-3" and r["fold"] == "fold2"]
    kept = sorted((tmp_path / "members").rglob("*.pt"))
    assert sorted(p.name for p in kept) == sorted(f"{f}-seed{s}.pt" for f in ("fold1", "fold2")
                                                   for s in ensemble["seeds"])
    next(p for p in kept if p.name == "fold2-seed44.pt").unlink()
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r is not ensemble))
    trained = []
    fit = crop_cv.fit_crop_classifier
    monkeypatch.setattr(crop_cv, "fit_crop_classifier", lambda model, *a: trained.append(1) or fit(model, *a))
    assert crop_cv.main(argv) == 0
    assert len(trained) == 1
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    [again] = [r for r in rows if r["arm"] == "ensemble-3" and r["fold"] == "fold2"]
    assert again["members"][:2] == ensemble["members"][:2]  # the kept weights, their scores and seconds
    # A kept member of another recipe (a default changed since) is trained again, not mixed in.
    defaults = crop_cv.BoxClassifierSettings
    monkeypatch.setattr(crop_cv, "BoxClassifierSettings", lambda: replace(defaults(), max_lr=0.03))
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r is not again))
    trained.clear()
    assert crop_cv.main(argv) == 0
    assert len(trained) == 3


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


def test_an_ensemble_reads_as_the_mean_of_its_members_probabilities(crop_cv):
    import torch

    from model.box_classifier import build
    from model.pretrain import crop_opinions

    torch.manual_seed(0)
    members = [build(5).eval() for _ in range(2)]
    images = torch.rand(3, 3, 112, 112)
    with torch.no_grad():
        (classes_a, malignant_a), (classes_b, malignant_b) = (crop_opinions(m, images, False) for m in members)
        classes, malignant = crop_opinions(crop_cv.ProbabilityMean(members), images, False)
    assert not torch.allclose(classes_a, classes_b)  # two different opinions to average
    assert torch.allclose(classes, (classes_a + classes_b) / 2, atol=1e-6)
    assert torch.allclose(malignant, (malignant_a + malignant_b) / 2, atol=1e-5)


def test_a_lever_from_another_seed_is_measured_against_that_seeds_plain_learner(crop_cv):
    rows = [{"arm": arm, "fold": fold} for fold in ("fold1", "fold2")
            for arm in ("stretch", "seed-43", "outline-seed-43", "keep-aspect")]

    def against(arm: str, fold: str = "fold2") -> tuple[str, str] | None:
        row = next(r for r in rows if r["arm"] == arm and r["fold"] == fold)
        baseline = crop_cv._baseline(row, rows)
        return baseline and (baseline["arm"], baseline["fold"])
    assert against("outline-seed-43") == ("seed-43", "fold2")
    assert against("seed-43", "fold1") == ("stretch", "fold1")  # a seed against the default seed
    assert against("keep-aspect") == ("stretch", "fold2")
    assert against("stretch") is None
