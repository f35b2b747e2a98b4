#!/usr/bin/env bash
# A reference run's two models evaluated with their box heads reading fewer RPN proposals
# (docs/results.md item 76: what float32 prediction on a CPU without bfloat16 would gain in time
# costs this in accuracy), inference only. For each count N, the first model (RUN/model) and the
# second (RUN/model-no4, its Table II at the cut the run fitted) are evaluated as the recipe
# evaluates them (scripts/dev_evaluations.sh) into RUN/MODEL-proposals-N-fold4 and -breast,
# beside the run's own evaluations at the config's count (RUN/MODEL-fold4, -breast); read each pair
# with scripts/paired_bootstrap.py. An evaluation already there is not run again.
#   scripts/proposals_arms.sh RUN N...
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: scripts/proposals_arms.sh RUN N..." >&2; exit 2; }
run=$1
shift
data=${DATA:-../shared/data}
birads=${BIRADS:-./birads}
source scripts/dev_evaluations.sh
for count in "$@"; do
  [[ $count =~ ^[1-9][0-9]*$ ]] || { echo "N must be a positive whole number, not $count" >&2; exit 2; }
done
for model in model model-no4; do
  [ -f "$run/$model/config.yaml" ] || { echo "$run/$model: not a model directory (no config.yaml)" >&2; exit 2; }
done
for count in "$@"; do
  for model in model model-no4; do
    evaluate_dev "$run/$model" "$run/$model-proposals-$count" --proposals "$count"
  done
done
