#!/usr/bin/env bash
# The labelling loop on real data (docs/results.md): the reference model (scripts/reference_model.sh,
# BUS-BRA) arrives at another hospital (BrEaST). Experts label 16 images of part1, then each round
# the model pre-annotates 16 more, the simulated expert corrects them, the model is fine-tuned;
# evaluated on part2 each round. Once in random order, once least confident first. The expert is
# shown what the backend serves by default (SHOW_BOXES top1-only, box voting). Each fine-tune runs the
# training jobs' schedule unless FINE_TUNE_EPOCHS, FINE_TUNE_LR or ITERS say otherwise
# (ITERS=60 FINE_TUNE_LR=0.005 REPLAY_RATIO=0 HOLDOUT_FRACTION=0 gives docs/results.md items 6-36's);
# REPLAY_RATIO=R (default 3, as the jobs; 0: none) replays R images of BUS-BRA folds 1-3, the reference model's own
# training images, per labelled image, as the jobs' REPLAY_DATA does (docs/results.md item 38).
# Each round holds out and gates as the jobs do (HOLDOUT_FRACTION, default the jobs' 0.2: a new
# version is served only where it keeps the held-out lesion AP50; item 52); HOLDOUT_FRACTION=0
# serves every version, as items 6-51 simulated. ROUNDS (default 3) rounds after round 0.
# FINE_TUNE_FREEZE (parts, e.g. category-head) and CLASSIFIER_MIN_LESIONS hold what each fine-tune
# keeps as the served version had it, as the jobs' FINE_TUNE_FREEZE and
# FINE_TUNE_CLASSIFIER_MIN_LESIONS (item 53).
set -euo pipefail
cd "$(dirname "$0")/.."
ref=${REF:-runs/reference/model}
out=${OUT:-runs/simulation}
data=${DATA:-../shared/data}
birads=${BIRADS:-./birads}
replay=()
ratio=${REPLAY_RATIO:-3}
if awk -v r="$ratio" 'BEGIN { exit !(r + 0 > 0) }'; then
  replay=(--replay-data "busbra:$data/BUS-BRA" --replay-splits fold1 fold2 fold3 --replay-ratio "$ratio")
fi
mkdir -p "$(dirname "$out")" && date +%s > "$out.start"  # wall time for docs/results.md
for order in ${ORDERS:-random uncertain}; do
  $birads simulate --data "breast:$data/BrEaST" --coarse --splits part1 \
    --holdout-splits part2 --initial 16 --round-size 16 --rounds "${ROUNDS:-3}" --order "$order" \
    --score-threshold "${SCORE_THRESHOLD:-0.5}" --display "${SHOW_BOXES:-top1-only}" --weights "$ref" --image-size 0 \
    ${ITERS:+--max-iter "$ITERS"} ${FINE_TUNE_EPOCHS:+--fine-tune-epochs "$FINE_TUNE_EPOCHS"} \
    ${FINE_TUNE_LR:+--fine-tune-lr "$FINE_TUNE_LR"} ${FINE_TUNE_FREEZE:+--fine-tune-freeze $FINE_TUNE_FREEZE} \
    ${CLASSIFIER_MIN_LESIONS:+--classifier-min-lesions "$CLASSIFIER_MIN_LESIONS"} ${HOLDOUT_FRACTION:+--holdout-fraction "$HOLDOUT_FRACTION"} \
    --batch-size 2 --bf16 --num-workers 1 --out "$out/$order" "${replay[@]}"
done
date +%s > "$out.end"
