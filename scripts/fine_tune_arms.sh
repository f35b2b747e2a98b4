#!/usr/bin/env bash
# docs/results.md items 37-38: how a training job should fine-tune a starter model on a new
# hospital's first images. From one starter (REF, a model directory), the loop's round 0 as
# `birads simulate` runs it (BrEaST part1's first 16 images in the simulation's order), fine-tuned
# one way per arm; every round-0 model and the starter itself then evaluated on part2 as the
# recipe's evaluations are (`birads evaluate --image-decision top`: lesion AP50, top-box BI-RADS
# accuracy, effort).
#   ARMS, item 37 (60 iterations each): lr-<rate> (at that learning rate) and frozen (at 0.005, the
#   whole R101 trunk frozen); default: lr-0.005 lr-0.001 lr-0.02 frozen.
#   ARMS, item 38 (the jobs' schedule, learning rate 0.001, in augmented epochs): epochs-<E> (the 16
#   images alone for E epochs: 0.75 is the jobs' 60 iterations) and replay-<R> (0.75 epochs of the
#   16 and R images of BUS-BRA folds 1-3, the starter's training folds, per image).
# Round 0 trains on all 16 (--holdout-fraction 0): the arms compare schedules, not the jobs' gate.
# A step whose output exists is not run again; each arm's wall time goes to OUT/NAME.start/.end.
set -euo pipefail
cd "$(dirname "$0")/.."
ref=${REF:-runs/reference/model}
out=${OUT:-runs/fine-tune-arms}
data=${DATA:-../shared/data}
birads=${BIRADS:-./birads}
mkdir -p "$out"

evaluate_part2() {  # MODEL OUT
  [ -d "$2" ] || $birads evaluate --data "breast:$data/BrEaST" --splits part2 --model "$1" --out "$2" \
    --image-decision top
}

arm() {  # NAME [birads simulate options: the arm's schedule]
  local name=$1
  shift
  if [ ! -d "$out/$name" ]; then
    date +%s > "$out/$name.start"
    $birads simulate --data "breast:$data/BrEaST" --coarse --splits part1 --holdout-splits part2 \
      --initial 16 --round-size 16 --rounds 0 --display top1-only --weights "$ref" --image-size 0 \
      --batch-size 2 --bf16 --num-workers 1 --holdout-fraction 0 --out "$out/$name" "$@"
    date +%s > "$out/$name.end"
  fi
  evaluate_part2 "$out/$name/models/round-0" "$out/$name-breast"
}

evaluate_part2 "$ref" "$out/starter-breast"
for name in ${ARMS:-lr-0.005 lr-0.001 lr-0.02 frozen}; do
  case $name in
    lr-*) arm "$name" --max-iter 60 --fine-tune-lr "${name#lr-}" ;;
    frozen) arm frozen --max-iter 60 --fine-tune-lr 0.005 --extra MODEL.BACKBONE.FREEZE_AT 5 ;;
    epochs-*) arm "$name" --fine-tune-epochs "${name#epochs-}" --fine-tune-lr 0.001 ;;
    replay-*) arm "$name" --fine-tune-epochs 0.75 --fine-tune-lr 0.001 --replay-data "busbra:$data/BUS-BRA" \
                --replay-splits fold1 fold2 fold3 --replay-ratio "${name#replay-}" ;;
    *) echo "unknown arm $name (lr-<rate>, frozen, epochs-<E> or replay-<R>)" >&2; exit 2 ;;
  esac
done
