#!/usr/bin/env bash
# The box classifier as a verifier of the detector's boxes (docs/results.md, item 14), on a copy of
# a first model, without touching it: a classifier trained on BUS-BRA folds 1-3 with misplaced
# background crops (MISPLACED, default 0.5) and blend 0 (the detector keeps naming the boxes), then
# evaluated twice on fold 4 and BrEaST part2: "kept" (rescore 0: the detector's boxes, scores and
# categories, plus the pathology head's malignancy) and "rescored" (its P(lesion) re-ranks the
# boxes with share RESCORE, default 0.5, fixed before any measurement; scripts/classifier_arms.sh).
# The same weights serve both arms: only classifier.json's rescore differs.
# Overrides (environment): REF (default runs/reference), OUT (runs/rescoring), DATA, BIRADS.
set -euo pipefail
cd "$(dirname "$0")/.."
ref=${REF:-runs/reference}
out=${OUT:-runs/rescoring}
data=${DATA:-../shared/data}
birads=${BIRADS:-./birads}
source scripts/dev_evaluations.sh
mkdir -p "$out"
if [ ! -d "$out/kept/box_classifier" ]; then
  rm -rf "$out/kept" && cp -r "$ref/model" "$out/kept"
  date +%s > "$out/classifier.start"
  $birads box-classifier --data "busbra:$data/BUS-BRA" --splits fold1 fold2 fold3 --holdout-splits fold4 \
    --model "$out/kept" --blend 0 --misplaced-share "${MISPLACED:-0.5}"
  date +%s > "$out/classifier.end"
fi
evaluate_dev "$out/kept" "$out/kept"
ARMS="rescored:${RESCORE:-0.5}:0" DATA=$data BIRADS=$birads scripts/classifier_arms.sh "$out/kept" "$out"
