"""The recipe's scripts: reference_model.sh keeps to its time budget (the pretraining's epochs and
the detector's iterations capped from timed probes); ablation.sh runs each arm as asked; test_sizes.sh
evaluates a model at other test sizes; classifier_arms.sh evaluates a model's box classifier under
other settings; box_voting_arms.sh evaluates a model with box voting; proposals_arms.sh a run's two
models at fewer proposals; fine_tune_arms.sh fine-tunes a starter
model each way asked. The `birads` command is a
stand-in that answers the probes with given speeds and records every call; the scripts' own logic is
what is tested."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
OVERRIDES = {"BUDGET_S", "ITERS", "ITERS_NO4", "PRETRAIN_EPOCHS", "PRETRAIN_SHARE", "MIN_EPOCHS", "MIN_ITERS",
             "EVAL_RESERVE_S", "CLASSIFIER_RESERVE_S", "HEADS", "MISPLACED", "ARMS", "PYTHON", "RESCORE",
             "UNTIL", "PROBE_MARGIN", "CHECKPOINT_PERIOD", "IMAGE_SIZE", "MAX_SIZE", "BATCH", "REF", "DATA", "KEEP",
             "ORDERS", "REPLAY_RATIO", "FINE_TUNE_LR", "FINE_TUNE_EPOCHS", "BOX_ROTATION", "ROI_ALIGN_FP32",
             "SEED"}
STAND_IN = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
command=$1; shift
out=""; probe=""
while [ $# -gt 0 ]; do
  case $1 in --out) out=$2; shift ;; --probe) probe=1 ;; esac
  shift
done
if [ -n "$probe" ]; then
  case $command in pretrain) echo "$SECONDS_PER_EPOCH" ;; train) echo "$SECONDS_PER_ITER" ;; esac
  exit 0
fi
if [ -n "$out" ]; then
  mkdir -p "$out"
  case $command in
    train) echo weights > "$out/model_final.pth"; echo "{}" > "$out/model.json" ;;
    evaluate) echo "{}" > "$out/metrics.json" ;;
  esac
fi
"""


def run_script(tmp_path: Path, epoch_s: float, iter_s: float, *args: str, script: str = "reference_model.sh",
               **env: str) -> list[str]:
    birads = tmp_path / "birads"
    birads.write_text(STAND_IN)
    birads.chmod(0o755)
    calls = tmp_path / "calls.txt"
    clean = {k: v for k, v in os.environ.items() if k not in OVERRIDES}  # a developer's own settings
    subprocess.run(["bash", str(SCRIPTS / script), *args], check=True, capture_output=True, text=True,
                   env=clean | {"OUT": str(tmp_path / "reference"), "BIRADS": str(birads), "CALLS": str(calls),
                                "SECONDS_PER_EPOCH": str(epoch_s), "SECONDS_PER_ITER": str(iter_s)} | env)
    return calls.read_text().splitlines()


def option(calls: list[str], command: str, name: str) -> int:
    line = next(c for c in calls if c.startswith(command) and "--probe" not in c)
    return int(re.search(rf"{name} (\d+)", line).group(1))


def test_a_slow_machine_pretrains_and_trains_less_to_keep_the_budget(tmp_path):
    # 183 s per epoch and 7 s per iteration: an AVX2-only CPU training in float32
    calls = run_script(tmp_path, 183, 7)
    assert option(calls, "pretrain", "--epochs") == int(7200 * 0.3 / 183)  # 11 of 30
    iters = option(calls, "train", "--max-iter")
    # what is left after pretraining (the stand-in takes no time), less evaluations, the box
    # classifier and start-up, each iteration taken as 10 % slower than the probe's
    assert iters == pytest.approx((7200 - 480 - 720 - 60) / (7 * 1.1) * 5 / 6, abs=2)
    assert any("--without-birads-4" in c and f"--max-iter {iters // 5} " in c for c in calls)


def test_the_probes_margin_is_an_override(tmp_path):
    iters = option(run_script(tmp_path, 183, 7, PROBE_MARGIN="1"), "train", "--max-iter")
    assert iters == pytest.approx((7200 - 480 - 720 - 60) / 7 * 5 / 6, abs=2)


def test_a_fast_machine_keeps_the_full_recipe(tmp_path):
    calls = run_script(tmp_path, 52, 2)  # the AMX Xeon of the reference run
    assert option(calls, "pretrain", "--epochs") == 30
    assert option(calls, "train", "--max-iter") == 1500
    assert any("--without-birads-4" in c and "--max-iter 300" in c for c in calls)


def test_the_first_model_has_groupnorm_heads_and_a_box_classifier_trained_after_the_second_model(tmp_path):
    calls = run_script(tmp_path, 52, 2)
    first = next(c for c in calls if c.startswith("train") and "--probe" not in c)
    assert "MODEL.FPN.NORM GN" in first and "MODEL.ROI_BOX_HEAD.NORM GN" in first
    second = next(i for i, c in enumerate(calls) if "--without-birads-4" in c)
    assert "--extra" not in calls[second]  # fine-tuned from the first: its config, heads included
    classifier = next(i for i, c in enumerate(calls) if c.startswith("box-classifier"))
    assert classifier > second  # else the second model would fine-tune a classifier of its own
    line = calls[classifier]
    assert f"--model {tmp_path / 'reference' / 'model'} " in line
    assert "--blend 0 " in line and line.endswith("--misplaced-share 0.5 --rescore 0.5")
    evaluations = [i for i, c in enumerate(calls) if c.startswith("evaluate")]
    assert evaluations and min(evaluations) > classifier  # the figures include its malignancy


def test_both_detectors_rotate_their_boxes_as_box_rotation_says(tmp_path):
    for name, env in (("corners", {}), ("ellipse", {"BOX_ROTATION": "ellipse"})):
        (tmp_path / name).mkdir()
        calls = run_script(tmp_path / name, 52, 2, **env)
        trainings = [c for c in calls if c.startswith("train ") and "--probe" not in c]
        assert len(trainings) == 2 and all(re.search(rf"--box-rotation {name}\b", c) for c in trainings)


def test_both_detectors_pool_in_float32_when_roi_align_fp32_says_so(tmp_path):
    for name, env, wanted in (("off", {}, False), ("on", {"ROI_ALIGN_FP32": "1"}, True)):
        (tmp_path / name).mkdir()
        calls = run_script(tmp_path / name, 52, 2, **env)
        trainings = [c for c in calls if c.startswith("train ") and "--probe" not in c]
        assert len(trainings) == 2 and all(("--roi-align-fp32" in c) is wanted for c in trainings)


def test_seed_redraws_both_detectors_and_nothing_else(tmp_path):
    for name, env in (("default", {}), ("seed-7", {"SEED": "7", "ROI_ALIGN_FP32": "1"})):
        (tmp_path / name).mkdir()
        calls = run_script(tmp_path / name, 52, 2, **env)
        trainings = [c for c in calls if c.startswith("train ") and "--probe" not in c]
        seeded = [c for c in calls if "--seed" in c and "--probe" not in c]
        assert len(trainings) == 2
        if env:  # each detector once, beside the other option; not the trunk, not the box classifier
            assert seeded == trainings and all("--roi-align-fp32 --seed 7 " in f"{c} " for c in trainings)
        else:  # the trainers' own default (42): the runs of items 71-73
            assert seeded == []
    with pytest.raises(subprocess.CalledProcessError) as refused:
        run_script(tmp_path / "default", 52, 2, SEED="4x")
    assert refused.value.returncode == 2 and "SEED must be a whole number" in refused.value.stderr


def test_the_default_heads_stay_available_and_a_wrong_name_is_refused(tmp_path):
    calls = run_script(tmp_path, 52, 2, HEADS="default")
    assert not any("--extra" in c for c in calls if c.startswith("train"))
    with pytest.raises(subprocess.CalledProcessError) as refused:
        run_script(tmp_path, 52, 2, HEADS="gm")
    assert refused.value.returncode == 2 and "HEADS must be gn or default" in refused.value.stderr


def test_a_very_slow_machine_still_pretrains_the_least_epochs(tmp_path):
    assert option(run_script(tmp_path, 2000, 7), "pretrain", "--epochs") == 5  # MIN_EPOCHS


def test_a_probe_that_answers_no_time_caps_nothing(tmp_path):
    assert option(run_script(tmp_path, 0, 2), "pretrain", "--epochs") == 30


def test_epochs_given_by_hand_are_not_probed(tmp_path):
    calls = run_script(tmp_path, 183, 2, PRETRAIN_EPOCHS="3")
    assert option(calls, "pretrain", "--epochs") == 3
    assert not any(c.startswith("pretrain") and "--probe" in c for c in calls)


def test_ablation_runs_each_arm_and_a_seed_given_as_arm_at_n(tmp_path):
    calls = run_script(tmp_path, 0, 0, "recipe", "gn-heads@7", script="ablation.sh",
                       OUT=str(tmp_path / "ablation"), REF=str(tmp_path / "reference"))
    trainings = [c for c in calls if c.startswith("train")]
    assert len(trainings) == 2 and "--seed" not in trainings[0]
    assert "--seed 7" in trainings[1] and "MODEL.ROI_BOX_HEAD.NORM GN" in trainings[1]
    for arm in ("recipe", "gn-heads@7"):  # each arm evaluated as the recipe is, in its own folder
        assert (tmp_path / "ablation" / arm / "fold4").is_dir() and (tmp_path / "ablation" / arm / "breast").is_dir()


def test_ablation_keeps_each_arms_reports_without_weights_where_asked(tmp_path):
    kept = tmp_path / "docs" / "kept-ablation"
    run_script(tmp_path, 0, 0, "recipe@3", script="ablation.sh", OUT=str(tmp_path / "ablation"),
               REF=str(tmp_path / "reference"), KEEP=str(kept))
    arm = tmp_path / "ablation" / "recipe@3"
    assert (arm / "model" / "model_final.pth").is_file()  # the run keeps its weights
    files = {p.relative_to(kept).as_posix() for p in kept.rglob("*") if p.is_file()}
    assert {"recipe@3/model/model.json", "recipe@3/fold4/metrics.json", "recipe@3/breast/metrics.json",
            "recipe@3/machine.txt", "recipe@3/train.log.gz"} <= files
    assert not any(f.endswith(".pth") for f in files)  # no weights in docs/


def test_a_seed_that_is_not_a_number_is_refused_before_training(tmp_path):
    with pytest.raises(subprocess.CalledProcessError) as refused:
        run_script(tmp_path, 0, 0, "recipe@x", script="ablation.sh", OUT=str(tmp_path / "ablation"))
    assert refused.value.returncode == 2 and "must be a number" in refused.value.stderr
    assert not (tmp_path / "calls.txt").exists()  # nothing was trained


def test_test_sizes_evaluates_a_copy_of_the_model_at_each_size_with_its_weights_linked(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    config = "INPUT:\n  MAX_SIZE_TEST: 576\n  MIN_SIZE_TEST: 320\n  MIN_SIZE_TRAIN:\n  - 320\n"
    (model / "config.yaml").write_text(config)
    (model / "model.json").write_text("{}")
    (model / "model_final.pth").write_text("weights")
    out = tmp_path / "sizes"
    calls = run_script(tmp_path, 0, 0, str(model), str(out), script="test_sizes.sh", SIZES="384")
    copy = out / "test-384" / "model"
    assert (copy / "config.yaml").read_text() == config.replace("576", "691").replace("TEST: 320", "TEST: 384")
    assert (copy / "model_final.pth").resolve() == (model / "model_final.pth").resolve()
    evaluated = [(re.search(r"--splits (\S+)", c).group(1), re.search(r"--model (\S+)", c).group(1))
                 for c in calls if c.startswith("evaluate")]
    assert evaluated == [("part1", str(model)), ("part1", str(copy)), ("part2", str(copy)), ("fold4", str(copy))]
    assert all("--image-decision top" in c for c in calls)


def test_test_sizes_redoes_a_copy_left_half_built_by_an_interrupted_run(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.yaml").write_text("INPUT:\n  MAX_SIZE_TEST: 576\n  MIN_SIZE_TEST: 320\n")
    (model / "model.json").write_text("{}")
    (model / "model_final.pth").write_text("weights")
    partial = tmp_path / "sizes" / "test-384" / "model.partial"
    partial.mkdir(parents=True)
    (partial / "model.json").write_text("{}")  # stopped before its config was written
    run_script(tmp_path, 0, 0, str(model), str(tmp_path / "sizes"), script="test_sizes.sh", SIZES="384")
    copy = tmp_path / "sizes" / "test-384" / "model"
    assert "MIN_SIZE_TEST: 384" in (copy / "config.yaml").read_text()
    assert (copy / "model_final.pth").read_text() == "weights" and not partial.exists()


def test_test_sizes_refuses_a_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(subprocess.CalledProcessError) as refused:
        run_script(tmp_path, 0, 0, str(tmp_path), str(tmp_path / "sizes"), script="test_sizes.sh")
    assert refused.value.returncode == 2 and "not a model directory" in refused.value.stderr


def test_test_sizes_scales_the_long_side_by_the_models_own_ratio(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.yaml").write_text("INPUT:\n  MAX_SIZE_TEST: 800\n  MIN_SIZE_TEST: 800\n")  # the paper's square
    (model / "model.json").write_text("{}")
    run_script(tmp_path, 0, 0, str(model), str(tmp_path / "sizes"), script="test_sizes.sh", SIZES="384")
    copied = (tmp_path / "sizes" / "test-384" / "model" / "config.yaml").read_text()
    assert copied == "INPUT:\n  MAX_SIZE_TEST: 384\n  MIN_SIZE_TEST: 384\n"


def _classified_model(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    (model / "box_classifier").mkdir(parents=True)
    for name in ("config.yaml", "model.json", "model_final.pth", "box_classifier/weights.pth"):
        (model / name).write_text(name)
    meta = {"classes": ["2", "3", "4", "5", "background"], "settings": {"blend": 0.0, "rescore": 0.0, "epochs": 30}}
    (model / "box_classifier" / "classifier.json").write_text(json.dumps(meta))
    return model


def test_classifier_arms_evaluate_copies_that_differ_only_in_rescore_and_blend(tmp_path):
    model = _classified_model(tmp_path)
    out = tmp_path / "arms"
    calls = run_script(tmp_path, 0, 0, str(model), str(out), script="classifier_arms.sh",
                       ARMS="ranked:0.5:0 blended:0.5:0.5", PYTHON=sys.executable)
    for name, blend in (("ranked", 0.0), ("blended", 0.5)):
        copy = out / name
        for weights in ("model_final.pth", "box_classifier/weights.pth"):
            assert (copy / weights).is_symlink() and (copy / weights).resolve() == (model / weights).resolve()
        settings = json.loads((copy / "box_classifier" / "classifier.json").read_text())["settings"]
        assert settings == {"blend": blend, "rescore": 0.5, "epochs": 30}
    evaluated = [(re.search(r"--splits (\S+)", c).group(1), re.search(r"--out (\S+)", c).group(1))
                 for c in calls if c.startswith("evaluate")]
    assert evaluated == [("fold4", str(out / "ranked-fold4")), ("part2", str(out / "ranked-breast")),
                         ("fold4", str(out / "blended-fold4")), ("part2", str(out / "blended-breast"))]
    assert json.loads((model / "box_classifier" / "classifier.json").read_text())["settings"]["rescore"] == 0.0


def test_classifier_arms_refuse_a_model_without_a_classifier_and_a_malformed_arm(tmp_path):
    with pytest.raises(subprocess.CalledProcessError) as refused:
        run_script(tmp_path, 0, 0, str(tmp_path), str(tmp_path / "arms"), script="classifier_arms.sh")
    assert refused.value.returncode == 2 and "no box classifier" in refused.value.stderr
    model = _classified_model(tmp_path)
    with pytest.raises(subprocess.CalledProcessError) as refused:
        run_script(tmp_path, 0, 0, str(model), str(tmp_path / "arms"), script="classifier_arms.sh", ARMS="ranked:0.5")
    assert refused.value.returncode == 2 and "NAME:RESCORE:BLEND" in refused.value.stderr


def test_box_voting_arms_evaluate_the_model_itself_with_each_iou_and_without(tmp_path):
    model = _classified_model(tmp_path)
    out = tmp_path / "voting"
    calls = run_script(tmp_path, 0, 0, str(model), str(out), script="box_voting_arms.sh", ARMS="off 0.7")
    evaluated = [(re.search(r"--splits (\S+)", c).group(1), re.search(r"--model (\S+)", c).group(1),
                  re.search(r"--out (\S+)", c).group(1), re.search(r"--(box-voting \S+|no-box-voting)", c).group(1))
                 for c in calls if c.startswith("evaluate")]
    assert evaluated == [("fold4", str(model), str(out / "voting-off-fold4"), "no-box-voting"),
                         ("part2", str(model), str(out / "voting-off-breast"), "no-box-voting"),
                         ("fold4", str(model), str(out / "voting-0.7-fold4"), "box-voting 0.7"),
                         ("part2", str(model), str(out / "voting-0.7-breast"), "box-voting 0.7")]
    assert all("--image-decision top" in c for c in calls)
    # run again, every evaluation is found there: no new call (the calls file keeps the first run's)
    assert run_script(tmp_path, 0, 0, str(model), str(out), script="box_voting_arms.sh", ARMS="off 0.7") == calls


def test_proposals_arms_evaluate_both_models_of_a_run_at_each_count(tmp_path):
    run = tmp_path / "run"
    for model in ("model", "model-no4"):
        (run / model).mkdir(parents=True)
        (run / model / "config.yaml").write_text("MODEL: {}\n")
    calls = run_script(tmp_path, 0, 0, str(run), "100", "50", script="proposals_arms.sh")
    evaluated = [(re.search(r"--splits (\S+)", c).group(1), re.search(r"--model (\S+)", c).group(1),
                  re.search(r"--out (\S+)", c).group(1), re.search(r"--proposals (\S+)", c).group(1))
                 for c in calls if c.startswith("evaluate")]
    assert evaluated == [(split, str(run / model), str(run / f"{model}-proposals-{n}-{name}"), n)
                         for n in ("100", "50") for model in ("model", "model-no4")
                         for split, name in (("fold4", "fold4"), ("part2", "breast"))]
    assert all("--image-decision top" in c for c in calls)
    assert run_script(tmp_path, 0, 0, str(run), "100", "50", script="proposals_arms.sh") == calls  # all there


@pytest.mark.parametrize("args, message", [(["0"], "positive whole number, not 0"),
                                           (["1e2"], "positive whole number, not 1e2"),
                                           ([], "usage")])
def test_proposals_arms_refuse_a_bad_count(tmp_path, args, message):
    with pytest.raises(subprocess.CalledProcessError) as refused:
        run_script(tmp_path, 0, 0, str(tmp_path / "run"), *args, script="proposals_arms.sh")
    assert refused.value.returncode == 2 and message in refused.value.stderr


def test_proposals_arms_refuse_a_run_without_both_models(tmp_path):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.yaml").write_text("MODEL: {}\n")
    with pytest.raises(subprocess.CalledProcessError) as refused:
        run_script(tmp_path, 0, 0, str(run), "100", script="proposals_arms.sh")
    assert refused.value.returncode == 2 and "model-no4: not a model directory" in refused.value.stderr


def test_fine_tune_arms_fine_tune_the_starter_each_way_and_evaluate_each_and_the_starter(tmp_path):
    ref = str(tmp_path / "starter")
    arms = "lr-0.001 frozen epochs-1.5 replay-1"
    calls = run_script(tmp_path, 1, 1, script="fine_tune_arms.sh", REF=ref, ARMS=arms)
    out = tmp_path / "reference"
    simulated = [c for c in calls if c.startswith("simulate")]
    assert len(simulated) == 4 and all(f"--weights {ref} " in c and "--rounds 0 " in c for c in simulated)
    assert simulated[0].endswith("--max-iter 60 --fine-tune-lr 0.001")
    assert simulated[1].endswith("--max-iter 60 --fine-tune-lr 0.005 --extra MODEL.BACKBONE.FREEZE_AT 5")
    # item 38's arms: the jobs' schedule in epochs (no fixed count), alone or with the starter's folds
    assert simulated[2].endswith("--fine-tune-epochs 1.5 --fine-tune-lr 0.001") and "--max-iter" not in simulated[2]
    assert simulated[3].endswith("--fine-tune-epochs 0.75 --fine-tune-lr 0.001 --replay-data busbra:../shared/data/"
                                 "BUS-BRA --replay-splits fold1 fold2 fold3 --replay-ratio 1")
    evaluated = [c.split("--model ")[1].split()[0] for c in calls if c.startswith("evaluate")]
    assert evaluated == [ref] + [f"{out}/{arm}/models/round-0" for arm in arms.split()]
    assert run_script(tmp_path, 1, 1, script="fine_tune_arms.sh", REF=ref, ARMS="lr-0.001") == calls  # done
    with pytest.raises(subprocess.CalledProcessError) as refused:
        run_script(tmp_path, 1, 1, script="fine_tune_arms.sh", REF=ref, ARMS="thaw")
    assert refused.value.returncode == 2 and "unknown arm thaw" in refused.value.stderr


def test_the_simulated_loop_replays_the_reference_models_folds_when_asked(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "replaying").mkdir()
    [plain] = run_script(tmp_path / "plain", 1, 1, script="simulation.sh", ORDERS="random", REPLAY_RATIO="0")
    assert plain.startswith("simulate ") and "--order random " in plain and "--replay" not in plain
    [replaying] = run_script(tmp_path / "replaying", 1, 1, script="simulation.sh", ORDERS="random",
                             DATA="d")  # by default, as the jobs replay (docs/results.md item 38)
    assert replaying.startswith(plain.replace("../shared/data", "d").replace("/plain/", "/replaying/"))
    assert replaying.endswith("--replay-data busbra:d/BUS-BRA --replay-splits fold1 fold2 fold3 --replay-ratio 3")


def test_the_simulated_loop_runs_the_jobs_schedule_unless_told_another(tmp_path):
    (tmp_path / "jobs").mkdir()
    (tmp_path / "item36").mkdir()
    [jobs] = run_script(tmp_path / "jobs", 1, 1, script="simulation.sh", ORDERS="random", REPLAY_RATIO="0")
    assert "--max-iter" not in jobs and "--fine-tune-lr" not in jobs and "--fine-tune-epochs" not in jobs
    [item36] = run_script(tmp_path / "item36", 1, 1, script="simulation.sh", ORDERS="random", REPLAY_RATIO="0",
                          ITERS="60", FINE_TUNE_LR="0.005", FINE_TUNE_EPOCHS="0.5")
    assert "--max-iter 60 " in item36 and "--fine-tune-lr 0.005 " in item36
    assert "--fine-tune-epochs 0.5 " in item36
