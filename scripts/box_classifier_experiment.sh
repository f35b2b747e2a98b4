#!/usr/bin/env bash
# The box-classifier lever (model/box_classifier.py) on the reference model, without touching it:
# copies of its two models each get a ResNet-18 crop classifier (BUS-BRA folds 1-3), then
# reference_model.sh's own evaluations run on the copies. docs/results.md sets the figures beside
# the reference model's (scripts/write_results.py). Run after scripts/reference_model.sh.
# Overrides (environment): REF (default runs/reference), OUT (runs/box-classifier), DATA, BIRADS.
set -euo pipefail
cd "$(dirname "$0")/.."
ref=${REF:-runs/reference}
out=${OUT:-runs/box-classifier}
data=${DATA:-../shared/data}
birads=${BIRADS:-./birads}
mkdir -p "$out"
[ -e "$out/trunk" ] || ln -s "$(realpath "$ref/trunk")" "$out/trunk"  # its stage is then done
for model in model model-no4; do
  if [ ! -d "$out/$model/box_classifier" ]; then
    rm -rf "$out/$model" && cp -r "$ref/$model" "$out/$model"
    date +%s > "$out/classifier-$model.start"
    $birads box-classifier --data "busbra:$data/BUS-BRA" --splits fold1 fold2 fold3 --holdout-splits fold4 \
      --model "$out/$model"
    date +%s > "$out/classifier-$model.end"
  fi
done
# Every model exists there, so only the evaluations run (the box classifiers on by default).
OUT="$out" DATA="$data" BIRADS="$birads" BUDGET_S=0 bash scripts/reference_model.sh
