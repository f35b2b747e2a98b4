#!/usr/bin/env bash
# Install real Label Studio 1.23.2 for the end-to-end tests, in its own venv (its pins clash with
# ours), once per machine, in the same cache as the project environment. Prints its bin folder.
set -euo pipefail
python=${PYTHON:-python3}
cache=${BIRADS_CACHE_DIR:-$HOME/.cache/birads}
venv=$cache/label-studio-1.23.2
mkdir -p "$cache"
exec 9>"$cache/.ls-lock"
flock 9
if [ ! -f "$venv/.complete" ]; then
  rm -rf "$venv"
  "$python" -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet label-studio==1.23.2 >&2
  touch "$venv/.complete"
fi
echo "$venv/bin"
