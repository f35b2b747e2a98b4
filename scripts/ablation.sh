#!/usr/bin/env bash
# One lever of the reference recipe at a time (docs/results.md, discussion item 5): each arm is the first
# model of scripts/reference_model.sh with one thing changed, evaluated as the recipe evaluates it
# (BUS-BRA fold 4, BrEaST part2, the most confident box per image).
#   scripts/ablation.sh ARM...      arms: recipe, seed-2, no-pretrain, no-balance, size-512, frozen-res4,
#                                    giou, gn-heads
# recipe: the first model with the default heads, as before the recipe took gn-heads (the baseline,
# on the machine that runs the arms); seed-2: the same with another seed (what a lever must beat on
# that machine); frozen-res4: res3 and res4 frozen too (only res5, FPN and heads learn): an
# iteration costs about 20 % less; giou: the box head's box
# regression trained with the generalized-IoU loss instead of smooth L1, weighted 10 (a GIoU of boxes
# is far smaller than an L1 of scaled deltas: mmdetection's GIoU Faster R-CNN uses 10 too);
# gn-heads: the recipe's trunk under no-pretrain's heads (GroupNorm in the FPN, a box head of four
# GroupNorm convolutions and one fully connected layer, model/configs/from_scratch.yaml), which
# localised best on the H200 (docs/results.md).
# ARM@N: any arm but seed-2 with seed N, in $OUT/ARM@N (two seeds of a lever: ARM ARM@2).
# All but no-pretrain start from the recipe's trunk ($REF/trunk, scripts/reference_model.sh).
# Each arm records the machine it trained on ($OUT/ARM/machine.txt: the GPU where there is one, else
# the CPU): compare arms of one machine only.
# A learning curve: each arm's checkpoints (every CHECKPOINT_PERIOD iterations, default 500; the last
# is the model itself) are evaluated too, in $OUT/ARM/at-N, after the model itself.
# KEEP=DIR: each finished arm's reports, configs and training log (no weights) are copied to DIR/ARM,
# e.g. docs/results/cpu-zen5-ablation, where scripts/write_results.py reads them (runs/ stays local).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/ablation}
ref=${REF:-runs/reference}
data=${DATA:-../shared/data}
birads=${BIRADS:-./birads}
source scripts/gn_heads.sh
recipe=(--data "busbra:$data/BUS-BRA" --splits fold1 fold2 fold3 --max-iter "${ITERS:-1500}" --batch-size 4
        --base-lr 0.01 --bf16 --num-workers 1 --checkpoint-period "${CHECKPOINT_PERIOD:-500}")
# keep_checkpoints DIR: copy the training run's periodic checkpoints (its work directory is removed
# when it ends) to DIR/checkpoints as they appear
keep_checkpoints() {
  mkdir -p "$1/checkpoints"
  while sleep 20; do
    for at in "$1"/.model.work/model_0*.pth; do
      if [ -e "$at" ] && [ ! -e "$1/checkpoints/$(basename "$at")" ]; then
        sleep 5  # detectron2 writes it in place: let it finish
        cp "$at" "$1/checkpoints/"
      fi
    done
  done
}
# machine_name: the first GPU's name where a driver answers, else the CPU's
machine_name() {
  local gpu
  if gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1) && [ -n "$gpu" ]; then
    echo "$gpu"
  else
    grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ //' || echo "not recorded"
  fi
}
# stop_keeping PID: end keep_checkpoints: its sleep first (the loop then ends; a copy under way
# finishes), then the loop itself
stop_keeping() {
  pkill -x -P "$1" sleep 2>/dev/null || true
  kill "$1" 2>/dev/null || true
}
# as_model MODEL CHECKPOINT DIR: a model directory with MODEL's config and CHECKPOINT's weights,
# built beside DIR and moved into place whole (an interrupted copy is redone, not taken for done)
as_model() {
  [ -d "$3" ] && return 0
  rm -rf "$3.partial" && mkdir -p "$3.partial"
  cp "$1/config.yaml" "$1/model.json" "$3.partial/"
  ln -s "$(realpath "$2")" "$3.partial/model_final.pth"
  mv "$3.partial" "$3"
}
# evaluate MODEL OUT: the recipe's evaluations (fold4, breast under OUT)
evaluate() {
  [ -d "$2/fold4" ] || $birads evaluate --data "busbra:$data/BUS-BRA" --splits fold4 --model "$1" \
    --out "$2/fold4" --image-decision top
  [ -d "$2/breast" ] || $birads evaluate --data "breast:$data/BrEaST" --splits part2 --model "$1" \
    --out "$2/breast" --image-decision top
}
# keep_reports ARM_DIR: ARM_DIR's reports, metrics, configs and gzipped training log (no weights,
# checkpoints or example pictures: they stay in runs/) to $KEEP/ARM, when KEEP is set
keep_reports() {
  [ -n "${KEEP:-}" ] || return 0
  local keep
  mkdir -p "$KEEP"
  keep=$(realpath "$KEEP")
  (cd "$(dirname "$1")" && find "$(basename "$1")" -type f ! -name "*.pth" ! -name examples.png \
     ! -name .birads-output ! -path "*/checkpoints/*" ! -path "*/.model.work/*" -print0 |
     xargs -0 cp --parents -t "$keep")
  gzip -f "$keep/$(basename "$1")/train.log" 2>/dev/null || true
}
# the recipe's own options for its first model: most arms add one thing to them
from_trunk=(--weights "$ref/trunk" --image-size 320 --max-size 576 --class-balanced)
for spec in "$@"; do
  arm=${spec%@*}  # ARM@N: the arm with seed N, in its own folder
  case $arm in
    no-pretrain) args=(--image-size 320 --max-size 576 --class-balanced) ;;  # from scratch (GroupNorm)
    no-balance) args=(--weights "$ref/trunk" --image-size 320 --max-size 576) ;;
    size-512) args=(--weights "$ref/trunk" --image-size 512 --max-size 800 --class-balanced) ;;
    recipe) args=("${from_trunk[@]}") ;;
    seed-2) args=("${from_trunk[@]}" --seed 2) ;;
    gn-heads) args=("${from_trunk[@]}" "${gn_heads[@]}") ;;
    giou) args=("${from_trunk[@]}" --extra MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE giou
                MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT 10.0) ;;
    frozen-res4) args=("${from_trunk[@]}" --extra MODEL.BACKBONE.FREEZE_AT 4) ;;
    *) echo "unknown arm $arm" >&2; exit 2 ;;
  esac
  if [ "$spec" != "$arm" ]; then
    [[ ${spec#*@} =~ ^[0-9]+$ ]] || { echo "arm $spec: the seed after @ must be a number" >&2; exit 2; }
    [ "$arm" != seed-2 ] || { echo "seed-2 has its seed; use recipe@N" >&2; exit 2; }
    args+=(--seed "${spec#*@}")
  fi
  dir=$out/$spec
  mkdir -p "$dir"
  if [ ! -d "$dir/model" ]; then
    date +%s > "$dir/train.start"
    machine_name > "$dir/machine.txt"
    keep_checkpoints "$dir" &
    keeper=$!
    trap 'stop_keeping "$keeper"' EXIT  # a failed training must not leave the copier running
    $birads train "${recipe[@]}" "${args[@]}" --out "$dir/model" 2>&1 | tee "$dir/train.log"
    stop_keeping "$keeper"
    trap - EXIT
    date +%s > "$dir/train.end"
  fi
  evaluate "$dir/model" "$dir"
  for at in "$dir"/checkpoints/model_*.pth; do
    [ -e "$at" ] || continue
    n=$(( 10#$(basename "$at" .pth | tr -dc 0-9) + 1 ))
    if [ "$n" -ge "${ITERS:-1500}" ]; then continue; fi  # the model itself
    as_model "$dir/model" "$at" "$dir/at-$n"
    evaluate "$dir/at-$n" "$dir/at-$n"
  done
  keep_reports "$dir"
done
