#!/usr/bin/env bash
# BI-RADS 4 -> 4A/4B/4C two ways on BrEaST, the only set here with subcategories (docs/results.md).
# Every model starts from the reference model (scripts/reference_model.sh) and sees the same
# BrEaST half (part1); all are tested on the other half (part2):
#   two models: a first model fine-tuned on part1 with 4A/4B/4C read as 4 (--coarse), and the
#     paper's second model fine-tuned on part1 without BI-RADS 4, its cuts fitted on part1's 4s;
#   direct: one model fine-tuned on part1's 4A/4B/4C labels.
set -euo pipefail
cd "$(dirname "$0")/.."
ref=${REF:-runs/reference/model}
out=${OUT:-runs/subcategories}
mkdir -p "$(dirname "$out")" && date +%s > "$out.start"  # wall time for docs/results.md
breast="breast:${DATA:-../shared/data}/BrEaST"
tune=(--weights "$ref" --image-size 0 --max-iter "${ITERS:-150}" --batch-size 2 --base-lr 0.005 --bf16
      --num-workers 1)
./birads train --data "$breast" --splits part1 --coarse --out "$out/first" "${tune[@]}"
./birads train --data "$breast" --splits part1 --without-birads-4 --out "$out/without4" "${tune[@]}"
./birads fit-cuts --data "$breast" --splits part1 --model "$out/without4"
./birads train --data "$breast" --splits part1 --out "$out/direct" "${tune[@]}"
./birads evaluate --data "$breast" --splits part2 --model "$out/first" --split-4-with "$out/without4" \
  --image-decision top --out "$out/two-models-report"
./birads evaluate --data "$breast" --splits part2 --model "$out/direct" --image-decision top \
  --out "$out/direct-report"
date +%s > "$out.end"
