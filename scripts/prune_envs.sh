#!/usr/bin/env bash
# Remove the cached Python environments other than KEEP, so the disk does not fill with ones for
# pins nobody uses any more; never one a running process has loaded files from (another
# checkout's `make run`, serving): /proc/PID/maps names every file a process has mapped.
# Usage: scripts/prune_envs.sh CACHE_DIR KEEP_ENV
set -euo pipefail
cache=$1
keep=$2
for old in "$cache"/env-*; do
  [ -d "$old" ] || continue
  [ "$old" = "$keep" ] && continue
  real=$(realpath "$old")  # maps name files by their real path: a cache under a symlinked home too
  if grep -qsF "$real/" /proc/[0-9]*/maps; then
    echo "keeping $old: a running process uses it"
  else
    rm -rf "$old"
  fi
done
