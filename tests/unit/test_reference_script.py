"""scripts/reference_model.sh keeps to its time budget: the pretraining's epochs and the detector's
iterations are capped from timed probes. The `birads` command is a stand-in that answers the probes
with given speeds and records every call; the script's own arithmetic is what is tested."""

import os
import re
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "reference_model.sh"
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
if [ -n "$out" ]; then mkdir -p "$out"; fi
"""


def run_script(tmp_path: Path, epoch_s: float, iter_s: float, **env: str) -> list[str]:
    birads = tmp_path / "birads"
    birads.write_text(STAND_IN)
    birads.chmod(0o755)
    calls = tmp_path / "calls.txt"
    subprocess.run(["bash", str(SCRIPT)], check=True, capture_output=True, text=True, env=os.environ | {
        "OUT": str(tmp_path / "reference"), "BIRADS": str(birads), "CALLS": str(calls),
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
    # what is left after pretraining (the stand-in takes no time), less evaluations and start-up
    assert iters == pytest.approx((7200 - 480 - 60) / 7 * 5 / 6, abs=2)
    assert any("--without-birads-4" in c and f"--max-iter {iters // 5} " in c for c in calls)


def test_a_fast_machine_keeps_the_full_recipe(tmp_path):
    calls = run_script(tmp_path, 52, 2)  # the AMX Xeon of the reference run
    assert option(calls, "pretrain", "--epochs") == 30
    assert option(calls, "train", "--max-iter") == 1500
    assert any("--without-birads-4" in c and "--max-iter 300" in c for c in calls)


def test_epochs_given_by_hand_are_not_probed(tmp_path):
    calls = run_script(tmp_path, 183, 2, PRETRAIN_EPOCHS="3")
    assert option(calls, "pretrain", "--epochs") == 3
    assert not any(c.startswith("pretrain") and "--probe" in c for c in calls)
