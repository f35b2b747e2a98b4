#!/usr/bin/env bash
# docs/results.md item 59: item 58's second-model stage with corners instead of ellipse boxes, from
# item 58's first model as that stage saw it (no box classifier yet), then the recipe's evaluations.
# Run from the repository root after item 58's reference run (runs/reference-ellipse).
set -euo pipefail
data=${DATA:-../shared/data}
birads=./birads
out=runs/no4-corners
parent=$out/parent
mkdir -p "$parent"
cp runs/reference-ellipse/model/{model_final.pth,config.yaml,model.json,metrics.json} "$parent/"
$birads train --data "busbra:$data/BUS-BRA" --splits fold1 fold2 fold3 --out "$out/model-no4" \
  --without-birads-4 --weights "$parent" --image-size 0 --max-iter 277 --batch-size 4 --base-lr 0.005 \
  --class-balanced --bf16 --num-workers 1 --box-rotation corners
$birads fit-cuts --data "breast:$data/BrEaST" --splits part1 --model "$out/model-no4"
source scripts/dev_evaluations.sh
evaluate_dev "$out/model-no4" "$out/model-no4"
