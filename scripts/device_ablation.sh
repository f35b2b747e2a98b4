#!/usr/bin/env bash
# The one-lever-at-a-time arms of scripts/ablation.sh on a lent GPU machine, all in one call: the
# recipe's trunk pretrained there first (the recipe's own stage), then every arm trained side by
# side on the one GPU (at the recipe's 320/576 px each process is bound by its own CPU core's
# kernel launches, not by the GPU), each evaluated as the recipe evaluates it. An arm still running
# at the deadline is stopped; its log ($arm.log in reports.tgz) says how far it got.
# Runs THERE, through the device tool, after packing data and wheels HERE:
#   .venv/bin/python scripts/device_pack.py pack ../shared/data .device
#   run(command="bash scripts/device_ablation.sh", carry=[".device"], timeout_s=590)
# Brings back in $OUT: log.txt, env.txt and reports.tgz (every report, metric and log; no weights).
# Overrides: ARMS (default: recipe seed-2 no-balance size-512 no-pretrain giou), BUDGET_S (default
# 540: seconds for the whole script), CHECKPOINT_PERIOD (ablation.sh's; default here none: no learning
# curve, which the CPU runs have), PYTHON, NO_WHEELS (a dry run on a CPU), and ablation.sh's ITERS.
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${BUDGET_S:-540}
arms=${ARMS:-recipe seed-2 no-balance size-512 no-pretrain giou}
run=/tmp/birads-ablation
source scripts/device_env.sh
trap 'tar czf "$back/reports.tgz" --exclude="*.pth" -C "$run" . 2>/dev/null || true' EXIT
mkdir -p "$run"
echo "== $(elapsed) s: the recipe's trunk"
OUT=$run/reference UNTIL=pretrain BUDGET_S=0 scripts/reference_model.sh
left=$(( budget - $(elapsed) ))
if [ "$left" -lt 60 ]; then echo "== $(elapsed) s: only $left s left of $budget, no arm started"; exit 1; fi
echo "== $(elapsed) s: arms $arms side by side, stopped after $left s"
declare -A pids
for arm in $arms; do
  # two threads each: the machine's 16 cores shared by the arms and their data loaders
  OMP_NUM_THREADS=2 OUT=$run REF=$run/reference CHECKPOINT_PERIOD=${CHECKPOINT_PERIOD:-1000000} \
    timeout "$left" bash scripts/ablation.sh "$arm" > "$run/$arm.log" 2>&1 &
  pids[$arm]=$!
done
for arm in $arms; do
  if wait "${pids[$arm]}"; then status=done; else status="failed or stopped (exit $?)"; fi
  echo "== $(elapsed) s: $arm $status; $(grep -o 'iter: [0-9]*' "$run/$arm.log" | tail -1)"
done
