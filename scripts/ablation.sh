#!/usr/bin/env bash
# One lever of the reference recipe at a time (docs/results.md, discussion item 5): each arm is the first
# model of scripts/reference_model.sh with one thing changed, evaluated as the recipe evaluates it
# (BUS-BRA fold 4, BrEaST part2, the most confident box per image).
#   scripts/ablation.sh ARM...      arms: no-pretrain, no-balance, size-512
# no-balance and size-512 start from the recipe's trunk ($REF/trunk, scripts/reference_model.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/ablation}
ref=${REF:-runs/reference}
data=${DATA:-../shared/data}
birads=${BIRADS:-./birads}
recipe=(--data "busbra:$data/BUS-BRA" --splits fold1 fold2 fold3 --max-iter "${ITERS:-1500}" --batch-size 4
        --base-lr 0.01 --bf16 --num-workers 1)
for arm in "$@"; do
  case $arm in
    no-pretrain) args=(--image-size 320 --max-size 576 --class-balanced) ;;  # from scratch (GroupNorm)
    no-balance) args=(--weights "$ref/trunk" --image-size 320 --max-size 576) ;;
    size-512) args=(--weights "$ref/trunk" --image-size 512 --max-size 800 --class-balanced) ;;
    *) echo "unknown arm $arm" >&2; exit 2 ;;
  esac
  dir=$out/$arm
  mkdir -p "$dir"
  if [ ! -d "$dir/model" ]; then
    date +%s > "$dir/train.start"
    $birads train "${recipe[@]}" "${args[@]}" --out "$dir/model"
    date +%s > "$dir/train.end"
  fi
  $birads evaluate --data "busbra:$data/BUS-BRA" --splits fold4 --model "$dir/model" --out "$dir/fold4" \
    --image-decision top
  $birads evaluate --data "breast:$data/BrEaST" --splits part2 --model "$dir/model" --out "$dir/breast" \
    --image-decision top
done
