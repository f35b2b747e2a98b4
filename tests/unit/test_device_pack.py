"""scripts/device_pack.py: the datasets sent to a GPU machine come back, after unpacking, in their
own layout with the same images (up to JPEG noise), boxes, categories and splits."""

import importlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model import datasets

SCRIPTS = Path(__file__).parents[2] / "scripts"
DATA = Path(__file__).parents[1] / "data"


@pytest.fixture(scope="module")
def device_pack():
    # Imported by name from sys.path, which spawned pool workers inherit: they unpickle its
    # functions by module name, whatever start method the suite left multiprocessing with.
    sys.path.insert(0, str(SCRIPTS))
    yield importlib.import_module("device_pack")
    sys.path.remove(str(SCRIPTS))
    del sys.modules["device_pack"]


@pytest.mark.parametrize("fmt, folder", [("busbra", "busbra"), ("breast", "breast")])
def test_pack_and_unpack_keep_the_dataset(device_pack, tmp_path, fmt, folder):
    device_pack.pack_data(DATA / folder, tmp_path / "packed")
    packed = sorted(p.name for p in (tmp_path / "packed").rglob("*.jpg"))
    assert packed and all(name.endswith(".png.jpg") for name in packed)
    assert not any("mask" in name or "_tumor" in name for name in packed)  # masks stay exact PNGs

    device_pack.unpack(tmp_path / "packed", tmp_path / "unpacked")
    original = datasets.load(f"{fmt}:{DATA / folder}")
    restored = datasets.load(f"{fmt}:{tmp_path / 'unpacked'}")
    assert [(Path(r.path).name, r.split, r.birads, r.boxes) for r in restored] == \
        [(Path(r.path).name, r.split, r.birads, r.boxes) for r in original]
    for before, after in zip(original, restored):
        a = np.asarray(Image.open(before.path).convert("L"), dtype=np.int16)
        b = np.asarray(Image.open(after.path), dtype=np.int16)
        assert a.shape == b.shape
        assert np.abs(a - b).mean() < 3  # JPEG quality 85 on grey levels 0-255


def test_unpack_leaves_other_files_untouched(device_pack, tmp_path):
    shutil.copytree(DATA / "busbra", tmp_path / "src")
    device_pack.pack_data(tmp_path / "src", tmp_path / "packed")
    device_pack.unpack(tmp_path / "packed", tmp_path / "out")
    for name in ("bus_data.csv", "4-fold-cv.csv"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "src" / name).read_bytes()
    for mask in (tmp_path / "src" / "Masks").iterdir():
        assert (tmp_path / "out" / "Masks" / mask.name).read_bytes() == mask.read_bytes()
