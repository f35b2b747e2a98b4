#!/usr/bin/env bash
# One trained model evaluated at other test sizes, inference only (docs/results.md, discussion item 11):
# is a hospital's miss one of scale? For each size S, a copy of the model directory whose config tests
# at short side S (the long side's cap scaled alike, keeping the model's ratio), weights linked, evaluated as
# the recipe evaluates (the most confident box per image) on BrEaST part1 (to choose on: no model here
# trains on it), BrEaST part2 and BUS-BRA fold 4. The model's own size is evaluated on part1 too
# (its part2 and fold 4 reports are the recipe's own).
#   scripts/test_sizes.sh MODEL OUT        sizes: SIZES (default "384 448")
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: scripts/test_sizes.sh MODEL OUT" >&2; exit 2; }
model=$(realpath "$1")
out=$2
data=${DATA:-../shared/data}
birads=${BIRADS:-./birads}
[ -f "$model/config.yaml" ] || { echo "$model: not a model directory (no config.yaml)" >&2; exit 2; }
# evaluate_at MODEL DIR: the three evaluations of MODEL under DIR (each skipped when already there)
evaluate_at() {
  for split in part1 part2; do
    [ -d "$2/breast-$split" ] || $birads evaluate --data "breast:$data/BrEaST" --splits "$split" \
      --model "$1" --out "$2/breast-$split" --image-decision top
  done
  [ -d "$2/fold4" ] || $birads evaluate --data "busbra:$data/BUS-BRA" --splits fold4 --model "$1" \
    --out "$2/fold4" --image-decision top
}
own=$(sed -n 's/^  MIN_SIZE_TEST: //p' "$model/config.yaml")
own_max=$(sed -n 's/^  MAX_SIZE_TEST: //p' "$model/config.yaml")
if [ -z "$own" ] || [ -z "$own_max" ]; then
  echo "$model/config.yaml: no INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST to change" >&2; exit 2
fi
[ -d "$out/test-$own/breast-part1" ] || $birads evaluate --data "breast:$data/BrEaST" --splits part1 \
  --model "$model" --out "$out/test-$own/breast-part1" --image-decision top
for size in ${SIZES:-384 448}; do
  copy=$out/test-$size/model
  if [ ! -d "$copy" ]; then  # built beside, moved into place whole: an interrupted copy is redone
    rm -rf "$copy.partial" && mkdir -p "$copy.partial"
    cp "$model/model.json" "$copy.partial/"
    ln -sfn "$model/model_final.pth" "$copy.partial/model_final.pth"
    sed -e "s/^  MIN_SIZE_TEST: .*/  MIN_SIZE_TEST: $size/" \
        -e "s/^  MAX_SIZE_TEST: .*/  MAX_SIZE_TEST: $(( own_max * size / own ))/" \
        "$model/config.yaml" > "$copy.partial/config.yaml"
    mv "$copy.partial" "$copy"
  fi
  evaluate_at "$copy" "$out/test-$size"
done
