#!/usr/bin/env bash
# All benchmarks in one run. MODEL=<model dir> to use a trained model; otherwise a product-default
# R101-FPN (800 px) model directory is made with one training iteration: speed does not depend on
# the weights (accuracy parity of bf16 is proven in tests/model/test_training.py).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${DATA:-busbra:../shared/data/BUS-BRA}
model=${MODEL:-}
if [ -z "$model" ]; then
  model=$(mktemp -d)/r101
  log=$(mktemp)
  ./birads train --data "busbra:tests/data/busbra" --out "$model" --max-iter 1 --num-workers 0 >"$log" 2>&1 \
    || { tail -20 "$log"; echo "could not make the benchmark model" >&2; exit 1; }
fi
echo "## predictor ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2))"
.venv/bin/python bench/predictor.py --model "$model" --data "$data" --images 8 --sizes 0 512 800
echo "## trainer"
.venv/bin/python bench/trainer.py --data "$data" --images 16 --size 512 --iters 8
echo "## box pooling"
.venv/bin/python bench/roi_pooling.py
echo "## backend"
.venv/bin/python bench/backend.py --model "$model" --data "$data" --predictions 500
echo "## status page"
.venv/bin/python bench/status_page.py
echo "## training estimate"
.venv/bin/python bench/estimate.py --data "$data" --weights "$model" --images 16 --iters 60
echo "## faults"
bench/faults.sh
if command -v wrk >/dev/null; then
  echo "## webhook flood (wrk)"
  .venv/bin/python bench/webhook_flood.py --connections 1
  .venv/bin/python bench/webhook_flood.py --connections 8
fi
