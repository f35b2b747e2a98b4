"""Reading images and writing files safely. Shared by importers, trainer, predictor, evaluator."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Ultrasound frames are small; anything above this is a decompression bomb, not a scan.
Image.MAX_IMAGE_PIXELS = 60_000_000


class DataError(ValueError):
    """Bad input data. The message names the file (and row) at fault."""


def read_image(path: str | Path) -> np.ndarray:
    """Image as displayed (EXIF orientation applied) as an RGB uint8 array HxWx3.

    Grayscale, palette and RGBA inputs (BrEaST stores grey content as RGBA) become RGB.
    """
    try:
        with Image.open(path) as image:
            return to_rgb_array(image)
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None


def stretch_to_8bit(pixels: np.ndarray) -> np.ndarray:
    """Grey values of any depth (16-bit PNG, DICOM) stretched onto 0-255."""
    data = np.asarray(pixels, dtype=np.float32)
    span = max(float(data.max() - data.min()), 1.0)
    return ((data - data.min()) * 255.0 / span).astype(np.uint8)


def to_rgb_array(image: Image.Image) -> np.ndarray:
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I", "F"):  # 16-bit grey: scale to 8 bit
        image = Image.fromarray(stretch_to_8bit(np.asarray(image)))
    return np.asarray(image.convert("RGB"))


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) as displayed, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; Windows cannot open folders and needs none)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sync_tree(folder: Path) -> None:
    """Flush every file under ``folder`` and the folders themselves to the disk."""
    for path in sorted(folder.rglob("*"), reverse=True):  # files before the folders holding them
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        elif path.is_dir():
            sync_folder(path)
    sync_folder(folder)


def write_atomic(path: str | Path, text: str) -> None:
    """Write a text file so that readers see the old content or the new, never half of it, after a
    power cut too (the data reaches the disk before the rename does)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        sync_folder(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class StagedDirectory:
    """Build a directory next to its destination and move it into place only on success.

    ``with StagedDirectory(out) as tmp: ...write into tmp...`` -- on an exception ``out`` is left
    exactly as it was (absent, or the previous content), so nothing is ever half-written.

    A destination that exists must be empty or an earlier StagedDirectory (it carries a marker
    file), so a mistyped ``--out`` can never wipe an unrelated folder.
    """

    MARKER = ".birads-output"

    def __init__(self, destination: str | Path) -> None:
        self.destination = Path(destination)

    def check(self) -> None:
        """Fail now (before long work) if the destination may not be replaced."""
        existing = self.destination
        if existing.exists() and (not existing.is_dir() or (
                any(existing.iterdir()) and not (existing / self.MARKER).exists())):
            raise DataError(f"{existing} exists and is not an earlier output of ours: "
                            "choose a new or empty directory")

    def __enter__(self) -> Path:
        self.check()
        self.destination.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(dir=self.destination.parent,
                                         prefix=f".{self.destination.name}."))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        (self.tmp / self.MARKER).touch()
        _sync_tree(self.tmp)  # after a power cut: the old folder or the whole new one, no empty files
        if self.destination.exists():
            old = self.destination.with_name(f".{self.destination.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.destination, old)
            os.replace(self.tmp, self.destination)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.destination)
        sync_folder(self.destination.parent)
