#!/usr/bin/env bash
# One trained model evaluated with box voting (model/box_voting.py: each box moved, after the box
# classifier has named and ranked it, to the P(lesion)-weighted mean of the proposals overlapping
# it), inference only (docs/results.md, items 18-19):
# for each IoU in ARMS (default "off 0.5": without voting, and at the IoU of
# Gidaris & Komodakis, fixed before measuring: the default since item 21), evaluated as the recipe evaluates on
# BUS-BRA fold 4 and BrEaST part2, into OUT/voting-IOU-fold4 and OUT/voting-IOU-breast.
#   scripts/box_voting_arms.sh MODEL OUT
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: scripts/box_voting_arms.sh MODEL OUT" >&2; exit 2; }
model=$1
out=$2
data=${DATA:-../shared/data}
birads=${BIRADS:-./birads}
source scripts/dev_evaluations.sh
[ -f "$model/config.yaml" ] || { echo "$model: not a model directory (no config.yaml)" >&2; exit 2; }
for iou in ${ARMS:-off 0.5}; do
  if [ "$iou" = off ]; then
    evaluate_dev "$model" "$out/voting-off" --no-box-voting
  else
    evaluate_dev "$model" "$out/voting-$iou" --box-voting "$iou"
  fi
done
