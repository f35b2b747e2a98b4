#!/usr/bin/env bash
# Build a detectron2 0.6 wheel from PyPI only, with no C++/CUDA extension.
#
# Why: detectron2 is not on PyPI under its own name. `pb1-detectron2==0.6` is a verbatim
# repackage of detectron2 v0.6 (Apache-2.0) that does not build as published: its
# detectron2/layers/csrc/ sources are missing and its setup.py reads model-zoo configs from a
# top-level configs/ it does not ship. Faster R-CNN FPN never calls the C++ ops, so we build it
# without extensions; model/compat.py supplies the stand-in for detectron2._C.
#
# Usage: build_detectron2.sh PYTHON OUT_DIR   (PYTHON must already have torch installed)
set -euo pipefail
python=$1
out=$2
if compgen -G "$out/pb1_detectron2-0.6-*.whl" >/dev/null; then
  echo "detectron2 wheel already built in $out"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# --no-build-isolation: setup.py imports torch just to read its version.
"$python" -m pip download --quiet --no-deps --no-build-isolation --no-binary :all: \
  pb1-detectron2==0.6 -d "$work"
tar -xzf "$work"/pb1-detectron2-0.6.tar.gz -C "$work"
src=$work/pb1-detectron2-0.6
mv "$src/detectron2/model_zoo/configs" "$src/configs"
sed -i 's/ext_modules=get_extensions(),/ext_modules=[],/' "$src/setup.py"
grep -q 'ext_modules=\[\],' "$src/setup.py" || { echo "setup.py patch failed" >&2; exit 1; }
mkdir -p "$out"
"$python" -m pip wheel --quiet --no-deps --no-build-isolation "$src" -w "$work/wheel"
mv "$work"/wheel/pb1_detectron2-0.6-*.whl "$out/"
echo "built $(ls "$out"/pb1_detectron2-0.6-*.whl)"
