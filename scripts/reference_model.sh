#!/usr/bin/env bash
# The reference model of docs/results.md, one command, within 2 hours on 2 CPU cores:
#   1. pretrain the R101 trunk as a classifier of lesion crops (BUS-BRA folds 1-3 only);
#   2. Faster R-CNN R101-FPN from that trunk at near-native size (short side 320, long <= 576),
#      rare categories repeated, GroupNorm heads (scripts/gn_heads.sh; HEADS=default: the default
#      heads, the recipe before docs/results.md item 15);
#   3. the paper's second model (no BI-RADS 4: classes 2, 3, 5), fine-tuned from the first;
#   4. the first model's box classifier (blend 0: the detector keeps naming the boxes; background
#      crops half misplaced beside or around a lesion): its pathology head gives each box its
#      P(malignant), the AUC against pathology and Label Studio's malignancy note (items 13-14);
#      its P(lesion) ranks the boxes with share RESCORE (0.5; 0: the detector's score ranks; item 17);
#   5. the second model's 4A/4B/4C cuts and Table II cut fitted on BrEaST part1; both models evaluated
#      on BUS-BRA fold 4 and BrEaST part2, then the first model's BI-RADS 4 on part2 split by the
#      second (the paper's Table III).
# A stage whose output exists is not run again (rerun after an interruption to go on).
# The result is a starter model for new projects: INITIAL_WEIGHTS=$OUT/model (README).
# The budget: BUDGET_S (default 7200; 0: none) bounds the whole script. First a timed probe of the
# pretraining caps its 30 epochs to PRETRAIN_SHARE (default 0.3) of the budget, never fewer than
# MIN_EPOCHS (5); after pretraining, a timed probe of the detector caps its 1500 + 300 iterations
# to what is left minus EVAL_RESERVE_S (default 480) and CLASSIFIER_RESERVE_S (default 720: the box
# classifier took 578-699 s on a 2100 MHz Xeon), each iteration taken as PROBE_MARGIN (default 1.1)
# times the probe's, never fewer than MIN_ITERS (200). A slower
# machine trains less (pretrain.json and each model's model.json say how long). PRETRAIN_EPOCHS
# or ITERS given by hand is used as it is.
# Overrides (environment): OUT, DATA, BIRADS (the command), PRETRAIN_EPOCHS, ITERS, ITERS_NO4,
# PROBE_MARGIN, IMAGE_SIZE/MAX_SIZE, BATCH, BASE_LR/BASE_LR_NO4, WORKERS, HEADS (gn or default), MISPLACED (the
# classifier's misplaced share, 0.5), RESCORE (its rank share, 0.5), BOX_ROTATION (how a training
# rotation turns a box: corners, the default, or ellipse; docs/results.md item 56), ROI_ALIGN_FP32=1
# (box features pooled in float32 at the exact corners; item 68), SEED (both detectors' training
# draw, 42 by default; the trunk and the box classifier keep theirs, so another SEED redraws only the
# detectors: how far one recipe's runs land apart, item 75); UNTIL=NAME stops after that stage
# (scripts/device_reference.sh runs the recipe at the paper's 800 px on a GPU this way).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/reference}
data=${DATA:-../shared/data}
busbra="busbra:$data/BUS-BRA"
breast="breast:$data/BrEaST"
birads=${BIRADS:-./birads}
source scripts/gn_heads.sh
source scripts/dev_evaluations.sh
case ${HEADS:-gn} in
  gn) heads=("${gn_heads[@]}") ;;
  default) heads=() ;;
  *) echo "HEADS must be gn or default, not ${HEADS}" >&2; exit 2 ;;
esac
# refused before 30 minutes of pretraining, not when the first detector's command reads it
if [ -n "${SEED:-}" ] && ! [[ $SEED =~ ^[0-9]+$ ]]; then echo "SEED must be a whole number, not ${SEED}" >&2; exit 2; fi
mkdir -p "$out"
# stage NAME DIR COMMAND...: run COMMAND unless DIR exists; its wall time goes to NAME.start/.end
stage() {
  local name=$1 dir=$2; shift 2
  if [ ! -d "$dir" ]; then
    date +%s > "$out/$name.start"
    "$@"
    date +%s > "$out/$name.end"
  fi
  if [ "${UNTIL:-}" = "$name" ]; then exit 0; fi
}

# fit ITERS + ITERS_NO4 (5:1) into what the budget leaves after pretraining, when it must shrink
fit_schedule() {
  if [ -d "$out/model" ] || [ -n "${ITERS:-}" ] || [ "${BUDGET_S:-7200}" -eq 0 ]; then return 0; fi
  local started spi left fit
  started=$(cat "$out/pretrain.start" 2>/dev/null || date +%s)
  spi=$($birads train "${detector[@]}" --probe | tail -1)
  # less 60 s: the two training stages' start-up (data, model), which the probe does not time
  left=$(( ${BUDGET_S:-7200} - ($(date +%s) - started) - ${EVAL_RESERVE_S:-480} - ${CLASSIFIER_RESERVE_S:-720} - 60 ))
  # times PROBE_MARGIN: the training ran 10-14 % slower than its probe on an AMD EPYC Zen 5
  # (docs/results.md item 21), 2 minutes past the budget
  fit=$(awk -v left="$left" -v spi="$spi" -v margin="${PROBE_MARGIN:-1.1}" -v least="${MIN_ITERS:-200}" \
        'BEGIN { n = int(left / (spi * margin) * 5 / 6); print (n < least ? least : n) }')
  echo "budget: $spi s per iteration, $left s left to train: room for $fit iterations"
  if [ "$fit" -lt "$iters" ]; then iters=$fit; iters_no4=$(( fit / 5 )); fi
}

iters=${ITERS:-1500}
iters_no4=${ITERS_NO4:-300}
detector_options=()  # both detectors: how they pool, their seed
if [ "${ROI_ALIGN_FP32:-0}" = 1 ]; then detector_options=(--roi-align-fp32); fi
if [ -n "${SEED:-}" ]; then detector_options+=(--seed "$SEED"); fi
detector=(--data "$busbra" --splits fold1 fold2 fold3 --out "$out/model" --weights "$out/trunk"
          --image-size "${IMAGE_SIZE:-320}" --max-size "${MAX_SIZE:-576}" --batch-size "${BATCH:-4}"
          --base-lr "${BASE_LR:-0.01}" --class-balanced --bf16 --num-workers "${WORKERS:-1}" "${heads[@]}"
          --box-rotation "${BOX_ROTATION:-corners}" "${detector_options[@]}")
# fit the trunk's epochs into PRETRAIN_SHARE of the budget, when they must shrink (an AVX2-only CPU
# has no bf16: 183 s per epoch were measured there, against 52 s on an AMX Xeon)
fit_pretraining() {
  if [ -n "${PRETRAIN_EPOCHS:-}" ] || [ "${BUDGET_S:-7200}" -eq 0 ]; then return 0; fi
  local spe fit
  spe=$($birads pretrain "${trunk[@]}" --probe | tail -1)
  if ! awk -v s="$spe" 'BEGIN { exit !(s + 0 > 0) }'; then
    echo "budget: the pretraining probe answered '$spe', not a time: $epochs epochs, uncapped"; return 0
  fi
  fit=$(awk -v budget="${BUDGET_S:-7200}" -v share="${PRETRAIN_SHARE:-0.3}" -v spe="$spe" \
        -v least="${MIN_EPOCHS:-5}" 'BEGIN { n = int(budget * share / spe); print (n < least ? least : n) }')
  echo "budget: $spe s per pretraining epoch: room for $fit epochs in ${PRETRAIN_SHARE:-0.3} of it"
  if [ "$fit" -lt "$epochs" ]; then epochs=$fit; fi
}
pretrain_trunk() {
  fit_pretraining
  $birads pretrain "${trunk[@]}" --holdout-splits fold4 --epochs "$epochs"
}
epochs=${PRETRAIN_EPOCHS:-30}
trunk=(--data "$busbra" --splits fold1 fold2 fold3 --out "$out/trunk")
stage pretrain "$out/trunk" pretrain_trunk
fit_schedule
stage model "$out/model" $birads train "${detector[@]}" --max-iter "$iters"
stage model-no4 "$out/model-no4" $birads train --data "$busbra" --splits fold1 fold2 fold3 \
  --out "$out/model-no4" --without-birads-4 --weights "$out/model" --image-size 0 \
  --max-iter "$iters_no4" --batch-size "${BATCH:-4}" --base-lr "${BASE_LR_NO4:-0.005}" \
  --class-balanced --bf16 --num-workers "${WORKERS:-1}" --box-rotation "${BOX_ROTATION:-corners}" "${detector_options[@]}"
# after model-no4, which would otherwise fine-tune a classifier of its own from the first model's
stage classifier "$out/model/box_classifier" $birads box-classifier --data "$busbra" \
  --splits fold1 fold2 fold3 --holdout-splits fold4 --model "$out/model" --blend 0 \
  --misplaced-share "${MISPLACED:-0.5}" --rescore "${RESCORE:-0.5}"
evaluations() {
  # first: the second model's evaluations report Table II at the cut fitted here too
  $birads fit-cuts --data "$breast" --splits part1 --model "$out/model-no4"
  for model in model model-no4; do
    evaluate_dev "$out/$model" "$out/$model"
  done
  $birads evaluate --data "$breast" --splits part2 --model "$out/model" --split-4-with "$out/model-no4" \
    --out "$out/split-breast" --image-decision top
}
stage evaluations "$out/split-breast" evaluations
