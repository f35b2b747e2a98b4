#!/usr/bin/env bash
# docs/results.md item 57: two detectors from runs/mech/trunk, differing only in --box-rotation, then fold 4
set -euo pipefail
cd "$(dirname "$0")/../../.."  # the repository root
source scripts/gn_heads.sh
iters=$1
for rot in corners ellipse; do
  [ -d runs/mech/model-$rot ] || { date +%s > runs/mech/model-$rot.start
    ./birads train --data busbra:../shared/data/BUS-BRA --splits fold1 fold2 fold3 --out runs/mech/model-$rot \
      --weights runs/mech/trunk --image-size 320 --max-size 576 --batch-size 4 --base-lr 0.01 --class-balanced \
      --bf16 --num-workers 1 "${gn_heads[@]}" --box-rotation $rot --max-iter "$iters"
    date +%s > runs/mech/model-$rot.end; }
done
for rot in corners ellipse; do
  [ -d runs/mech/model-$rot-fold4 ] || ./birads evaluate --data busbra:../shared/data/BUS-BRA --splits fold4 \
    --model runs/mech/model-$rot --out runs/mech/model-$rot-fold4 --image-decision top
done
