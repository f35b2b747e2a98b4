#!/usr/bin/env bash
# docs/results.md item 37: how a training job should fine-tune a starter model on a new hospital's
# first images. From one starter (REF, a model directory), the loop's round 0 as `birads simulate`
# runs it (BrEaST part1's first 16 images in the simulation's order), fine-tuned one way per arm;
# every round-0 model and the starter itself then evaluated on part2 as the recipe's evaluations
# are (`birads evaluate --image-decision top`: lesion AP50, top-box BI-RADS accuracy, effort).
#   ARMS: any of lr-<rate> (60 iterations at that learning rate) and frozen (60 at 0.005, the whole
#   R101 trunk frozen); default: lr-0.005 lr-0.001 lr-0.02 frozen.
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

arm() {  # NAME LEARNING_RATE [detectron2 KEY VALUE...]
  local name=$1 rate=$2
  shift 2
  if [ ! -d "$out/$name" ]; then
    date +%s > "$out/$name.start"
    $birads simulate --data "breast:$data/BrEaST" --coarse --splits part1 --holdout-splits part2 \
      --initial 16 --round-size 16 --rounds 0 --display top1-only --weights "$ref" --image-size 0 \
      --max-iter 60 --fine-tune-lr "$rate" --batch-size 2 --bf16 --num-workers 1 --out "$out/$name" \
      ${1:+--extra "$@"}
    date +%s > "$out/$name.end"
  fi
  evaluate_part2 "$out/$name/models/round-0" "$out/$name-breast"
}

evaluate_part2 "$ref" "$out/starter-breast"
for name in ${ARMS:-lr-0.005 lr-0.001 lr-0.02 frozen}; do
  case $name in
    lr-*) arm "$name" "${name#lr-}" ;;
    frozen) arm frozen 0.005 MODEL.BACKBONE.FREEZE_AT 5 ;;
    *) echo "unknown arm $name (lr-<rate> or frozen)" >&2; exit 2 ;;
  esac
done
