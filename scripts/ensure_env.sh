#!/usr/bin/env bash
# Create (once per machine) the Python environment for this exact set of pins and link it as .venv.
#
# The environment is ~6 GB (torch's CUDA libraries), and CI clones the repository afresh for each
# run, so environments live in a cache directory keyed by a hash of everything that decides their
# content. A fresh clone with unchanged pins just links the existing one; a fresh machine builds it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
cache=${BIRADS_CACHE_DIR:-$HOME/.cache/birads}
key=$(cat "$repo/requirements.txt" "$repo/scripts/build_detectron2.sh" "$repo/scripts/ensure_env.sh" \
      | sha256sum | cut -c1-16)
env=$cache/env-$key
mkdir -p "$cache"

exec 9>"$cache/.lock"
flock 9   # two clones building the same environment at once would corrupt it

if [ ! -f "$env/.complete" ]; then
  echo "building Python environment $env (first run on this machine: a few minutes)"
  rm -rf "$env"
  "$python" -m venv "$env"
  # torch first: detectron2's setup.py imports it.
  "$env/bin/pip" install --quiet torch==2.14.1 torchvision==0.29.1
  "$repo/scripts/build_detectron2.sh" "$env/bin/python" "$cache/wheels"
  "$env/bin/pip" install --quiet -r "$repo/requirements.txt"
  "$env/bin/pip" install --quiet --no-deps "$cache"/wheels/pb1_detectron2-0.6-*.whl
  touch "$env/.complete"
  "$repo/scripts/prune_envs.sh" "$cache" "$env"
fi
ln -sfn "$env" "$repo/.venv"
