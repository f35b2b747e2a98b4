#!/usr/bin/env bash
# The reference model of docs/results.md: R101-FPN from scratch on BUS-BRA folds 1-3, evaluated on
# fold 4 and on BrEaST. One command, one sitting on a 2-core machine (ITERS=1800: about 70 minutes
# on 2 cores of a Xeon with AMX).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/reference}
data=${DATA:-../shared/data}
mkdir -p "$(dirname "$out")" && date +%s > "$out.start"  # wall time for docs/results.md
./birads train --data "busbra:$data/BUS-BRA" --splits fold1 fold2 fold3 --out "$out/model" \
  --image-size 512 --max-iter "${ITERS:-1800}" --batch-size 2 --base-lr 0.02 --bf16 --num-workers 1
# The paper classifies every lesion image: the image's category is the most confident box.
./birads evaluate --data "busbra:$data/BUS-BRA" --splits fold4 --model "$out/model" --out "$out/fold4" \
  --image-decision top
./birads evaluate --data "breast:$data/BrEaST" --model "$out/model" --out "$out/breast" --image-decision top
date +%s > "$out.end"
