# Sourced by the recipe's scripts: a model's two development evaluations as the recipe runs them
# (the paper classifies every lesion image: the image's category is its most confident box).
#   evaluate_dev MODEL PREFIX [EVALUATE OPTIONS...]   BUS-BRA fold 4 into PREFIX-fold4 and BrEaST
#                                                      part2 into PREFIX-breast, each skipped when there
# Needs $birads (the command) and $data (the folder holding BUS-BRA and BrEaST).
# shellcheck shell=bash
evaluate_dev() {
  local model=$1 prefix=$2
  shift 2
  [ -d "$prefix-fold4" ] || $birads evaluate --data "busbra:$data/BUS-BRA" --splits fold4 --model "$model" \
    --out "$prefix-fold4" --image-decision top "$@"
  [ -d "$prefix-breast" ] || $birads evaluate --data "breast:$data/BrEaST" --splits part2 --model "$model" \
    --out "$prefix-breast" --image-decision top "$@"
}
