#!/usr/bin/env bash
# The labelling loop on real data (docs/results.md): the reference model (scripts/reference_model.sh,
# BUS-BRA) arrives at another hospital (BrEaST). Experts label 16 images of part1, then each round
# the model pre-annotates 16 more, the simulated expert corrects them, the model is fine-tuned;
# evaluated on part2 each round. Once in random order, once least confident first. The expert is
# shown what the backend serves by default (SHOW_BOXES top1-only, box voting). Each fine-tune runs the
# training jobs' schedule (FINE_TUNE_EPOCHS, FINE_TUNE_LR; ITERS=60 gives docs/results.md items 6-36's).
set -euo pipefail
cd "$(dirname "$0")/.."
ref=${REF:-runs/reference/model}
out=${OUT:-runs/simulation}
mkdir -p "$(dirname "$out")" && date +%s > "$out.start"  # wall time for docs/results.md
for order in ${ORDERS:-random uncertain}; do
  ./birads simulate --data "breast:${DATA:-../shared/data}/BrEaST" --coarse --splits part1 \
    --holdout-splits part2 --initial 16 --round-size 16 --rounds 3 --order "$order" \
    --score-threshold "${SCORE_THRESHOLD:-0.5}" --display "${SHOW_BOXES:-top1-only}" --weights "$ref" --image-size 0 \
    ${ITERS:+--max-iter "$ITERS"} --batch-size 2 --bf16 --num-workers 1 --out "$out/$order"
done
date +%s > "$out.end"
