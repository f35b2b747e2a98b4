#!/usr/bin/env bash
# One trained model's box classifier evaluated under other settings, inference only (docs/results.md,
# items 14 and 17): for each arm NAME:RESCORE:BLEND, a copy of the model directory (every weight
# linked, not copied) whose box_classifier/classifier.json has that rescore and blend, evaluated as
# the recipe evaluates (the most confident box per image) on BUS-BRA fold 4 and BrEaST part2, into
# OUT/NAME-fold4 and OUT/NAME-breast. The same weights serve every arm: only the two settings differ.
#   scripts/classifier_arms.sh MODEL OUT     arms: ARMS (default "ranked:0.5:0 blended:0.5:0.5")
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: scripts/classifier_arms.sh MODEL OUT" >&2; exit 2; }
model=$(realpath "$1")
out=$2
data=${DATA:-../shared/data}
birads=${BIRADS:-./birads}
python=${PYTHON:-.venv/bin/python}
source scripts/dev_evaluations.sh
meta=$model/box_classifier/classifier.json
[ -f "$meta" ] || { echo "$model: no box classifier ($meta)" >&2; exit 2; }
for arm in ${ARMS:-ranked:0.5:0 blended:0.5:0.5}; do
  IFS=: read -r name rescore blend <<< "$arm"
  if [ -z "$name" ] || [ -z "$rescore" ] || [ -z "$blend" ]; then
    echo "an arm is NAME:RESCORE:BLEND, not '$arm'" >&2; exit 2
  fi
  copy=$out/$name
  if [ ! -f "$copy/box_classifier/classifier.json" ]; then
    mkdir -p "$copy/box_classifier"
    cp "$model/config.yaml" "$model/model.json" "$copy/"
    ln -sfn "$model/model_final.pth" "$copy/model_final.pth"
    ln -sfn "$model/box_classifier/weights.pth" "$copy/box_classifier/weights.pth"
    $python - "$meta" "$rescore" "$blend" > "$copy/box_classifier/classifier.json.tmp" <<'PY'
import json, sys
meta = json.load(open(sys.argv[1]))
meta["settings"].update(rescore=float(sys.argv[2]), blend=float(sys.argv[3]))
print(json.dumps(meta, indent=1))
PY
    mv "$copy/box_classifier/classifier.json.tmp" "$copy/box_classifier/classifier.json"
  fi
  evaluate_dev "$copy" "$out/$name"
done
