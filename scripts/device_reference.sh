#!/usr/bin/env bash
# The reference recipe (scripts/reference_model.sh) on a lent GPU machine, at the paper's 800 px:
# batch 8 at the recipe's learning rates, the detector's schedule fitted by reference_model.sh's
# own probe so that the whole run ends within BUDGET_S seconds.
# Runs THERE, through the device tool, after packing data and wheels HERE:
#   .venv/bin/python scripts/device_pack.py pack ../shared/data .device
#   run(command="bash scripts/device_reference.sh", carry=[".device"], timeout_s=590)
# Brings back in $OUT: log.txt, env.txt and reports.tgz (every report and metric, no weights).
# Overrides: BUDGET_S, EVAL_RESERVE_S, PYTHON, IMAGE_SIZE, MAX_SIZE, BATCH, NO_WHEELS (a dry run
# on a CPU: small sizes, .venv's packages), and reference_model.sh's own (ITERS skips the probe).
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${BUDGET_S:-540}
eval_reserve=${EVAL_RESERVE_S:-150}  # both models on fold 4 and BrEaST, the cuts, the split
size=${IMAGE_SIZE:-800}
batch=${BATCH:-8}
workers=8  # data loader processes, of the machine's 16 cores
max_size=${MAX_SIZE:-$size}  # the paper's square cap; the CPU recipe: IMAGE_SIZE=320 MAX_SIZE=576
run=/tmp/birads-reference
source scripts/device_env.sh
trap 'tar czf "$back/reports.tgz" --exclude="*.pth" -C "$run" . 2>/dev/null || true' EXIT
export OUT=$run
echo "== $(elapsed) s: the recipe (its schedule fitted to the budget after pretraining)"
# a GPU pretrains the 30 epochs in about a minute: no probe for them
BUDGET_S=$(( budget - $(elapsed) )) PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-30} EVAL_RESERVE_S=$eval_reserve \
  IMAGE_SIZE=$size MAX_SIZE=$max_size \
  BATCH=$batch WORKERS=$workers scripts/reference_model.sh
echo "== $(elapsed) s: done"
