"""Carry the reference recipe's data and packages to a lent GPU machine (scripts/device_reference.sh).

The device tool sends at most 64 MiB and the machine reaches no registry, while BUS-BRA and
BrEaST take 145 MB as PNG. So ``pack`` (here) writes, into a folder git ignores:

* ``data/``: both datasets in their own layout, every image re-encoded as grayscale JPEG
  (quality 85; ~4x smaller) under its PNG name + ``.jpg``; masks and CSVs copied as they are;
* ``wheels/``: what detectron2 0.6 needs beyond the machine's own PyTorch image.

``unpack`` (there) writes the PNGs back under their names, so the importers read the datasets
unchanged. The JPEG round trip is lossy: figures from the GPU run are on images that differ from
the originals by JPEG noise (stated beside them in docs/results.md).

    .venv/bin/python scripts/device_pack.py pack ../shared/data .device
    python3 scripts/device_pack.py unpack .device/data /tmp/data      # on the device
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

JPEG_QUALITY = 85
# detectron2 0.6's imports beyond the device image (which has torch, opencv, matplotlib, tabulate,
# tqdm, portalocker, cloudpickle, pyyaml); versions as in requirements.txt's environment.
PURE_PYTHON = ["fvcore==0.1.5.post20221221", "iopath==0.1.9", "yacs==0.1.8", "termcolor==3.3.0",
               "omegaconf==2.3.1", "antlr4-python3-runtime==4.9.3"]
COMPILED = ["pycocotools==2.0.11"]
DEVICE_PYTHON = "3.12"


def _is_image(path: Path) -> bool:
    """An ultrasound image, not a mask (BUS-BRA's are mask_*.png; BrEaST's caseNNN_tumor/_otherK)."""
    return path.suffix == ".png" and "_" not in path.stem.replace("bus_", "")


def _to_jpeg(src_dst: tuple[Path, Path]) -> None:
    src, dst = src_dst
    Image.open(src).convert("L").save(dst, "JPEG", quality=JPEG_QUALITY)


def _to_png(src_dst: tuple[Path, Path]) -> None:
    src, dst = src_dst
    Image.open(src).save(dst, "PNG")


def _convert(pairs: list[tuple[Path, Path]], how: Callable[[tuple[Path, Path]], None]) -> None:
    with ProcessPoolExecutor() as pool:
        list(pool.map(how, pairs, chunksize=32))


def _mirror(source: Path, dest: Path, converted_name: Callable[[Path], str | None],
            how: Callable[[tuple[Path, Path]], None]) -> int:
    """Every file under ``source`` into the same place under ``dest``: converted by ``how`` under
    the name ``converted_name`` gives it, or copied as it is where that is None. Returns how many
    were converted."""
    pairs = []
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        target = dest / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        name = converted_name(path)
        if name:
            pairs.append((path, target.with_name(name)))
        else:
            shutil.copy2(path, target)
    _convert(pairs, how)
    return len(pairs)


def pack_data(source: Path, dest: Path) -> None:
    """Every file under ``source``: images as JPEG, the rest (masks, tables) as they are."""
    count = _mirror(source, dest, lambda p: p.name + ".jpg" if _is_image(p) else None, _to_jpeg)
    print(f"packed {count} images into {dest}")


def pack_wheels(dest: Path, detectron2_wheel: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(detectron2_wheel, dest)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(pip + ["wheel", "--quiet", "--no-deps", "-w", str(dest), *PURE_PYTHON], check=True)
    subprocess.run(pip + ["download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version",
                          DEVICE_PYTHON, "--implementation", "cp", "--platform", "manylinux_2_17_x86_64",
                          "--platform", "manylinux2014_x86_64", "-d", str(dest), *COMPILED], check=True)


def unpack(packed: Path, dest: Path) -> None:
    count = _mirror(packed, dest, lambda p: p.name.removesuffix(".jpg") if p.name.endswith(".png.jpg") else None,
                    _to_png)
    print(f"unpacked {count} images into {dest}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("pack")
    p.add_argument("data", type=Path, help="the folder holding BUS-BRA/ and BrEaST/")
    p.add_argument("out", type=Path)
    p.add_argument("--detectron2-wheel", type=Path,
                   default=next((Path.home() / ".cache/birads/wheels").glob("pb1_detectron2-0.6-*.whl"), None))
    p = commands.add_parser("unpack")
    p.add_argument("packed", type=Path)
    p.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.command == "pack":
        if args.detectron2_wheel is None:
            parser.error("no detectron2 wheel in ~/.cache/birads/wheels: run `make env` first, or name one")
        pack_data(args.data, args.out / "data")
        pack_wheels(args.out / "wheels", args.detectron2_wheel)
    else:
        unpack(args.packed, args.out)


if __name__ == "__main__":
    main()
