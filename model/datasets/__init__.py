"""Datasets as ``FORMAT:PATH`` specs -> lists of ``ImageRecord``.

Formats: ``busbra:DIR``, ``breast:DIR``, ``coco:FILE.json``, ``labelstudio:FILE.json``,
``records:FILE.json`` (what ``birads import`` writes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from model import taxonomy
from model.datasets.annotation_files import LabelNames, load_coco, load_labelstudio
from model.datasets.breast_ultrasound import load_breast, load_busbra
from model.io import DataError
from model.records import ImageRecord, load_records

FORMATS: dict[str, Callable[..., list[ImageRecord]]] = {
    "busbra": load_busbra,
    "breast": load_breast,
    "coco": load_coco,
    "labelstudio": load_labelstudio,
    "records": load_records,
}


LABELLED_FILES = ("coco", "labelstudio")  # the formats whose boxes are named by a tool's label names


def load(spec: str, image_root: Path | None = None, labels: LabelNames | None = None) -> list[ImageRecord]:
    """Load ``FORMAT:PATH``. ``image_root`` resolves Label Studio ``/data/...`` image URLs; ``labels``
    maps label names that are no BI-RADS name (a label config's aliases) to categories."""
    fmt, sep, path = spec.partition(":")
    if not sep or fmt not in FORMATS or not path:
        raise DataError(f"--data {spec!r}: expected FORMAT:PATH with FORMAT one of {', '.join(FORMATS)}")
    if labels and fmt not in LABELLED_FILES:
        raise DataError(f"--label maps the label names of {' and '.join(LABELLED_FILES)} files; "
                        f"{fmt} data names no labels")
    folder = Path(path).expanduser()  # the shell leaves the ~ of "busbra:~/data" as it is
    if not folder.exists():
        raise DataError(f"{path}: not found")
    try:
        if fmt == "labelstudio":
            return load_labelstudio(folder, image_root and Path(image_root).expanduser(), labels=labels)
        if fmt == "coco":
            return load_coco(folder, labels)
        return FORMATS[fmt](folder)
    except DataError:
        raise
    except (KeyError, TypeError, ValueError) as exc:  # files written by hand, truncated JSON
        raise DataError(f"{path}: malformed {fmt} data ({exc!r})") from None
    except OSError as exc:  # a folder where a file belongs, or the other way round
        raise DataError(f"{path}: cannot be read as {fmt} ({exc.__class__.__name__}: {exc.strerror})") from None


def select(records: Iterable[ImageRecord], splits: Iterable[str] | None = None,
           exclude: Iterable[str] | None = None) -> list[ImageRecord]:
    """Records whose split is in ``splits`` (all when None) and not in ``exclude``."""
    keep = set(splits) if splits else None
    drop = set(exclude or ())
    return [r for r in records if (keep is None or r.split in keep) and r.split not in drop]


class SplitsNotFound(DataError):
    """Splits asked for that the data does not hold."""


def check_splits(records: Iterable[ImageRecord], spec: str, named: Iterable[str]) -> None:
    """Refuse split names ``spec``'s records do not hold (a typo, or a fold the publisher's table
    lacks): a run that quietly went without them would not be the run asked for."""
    found = {r.split for r in records}
    if missing := list(dict.fromkeys(s for s in named if s not in found)):
        raise SplitsNotFound(f"{spec} has no images in {', '.join(missing)} "
                             f"(its splits: {', '.join(sorted(map(str, found)))})")


def load_splits(spec: str, splits: Iterable[str] | None = None, image_root: Path | None = None,
                labels: LabelNames | None = None) -> list[ImageRecord]:
    """``load`` then ``select``, refusing where a named split holds no image or nothing is left:
    a run that quietly trained or replayed without them would not be the run asked for."""
    everything = load(spec, image_root, labels)
    check_splits(everything, spec, splits or ())
    if not (chosen := select(everything, splits)):
        raise DataError(f"{spec}: no images")
    return chosen


def coarse(records: Iterable[ImageRecord]) -> list[ImageRecord]:
    """The records with BI-RADS 4A/4B/4C read as plain 4 (boxes and image-level category)."""
    classes = taxonomy.COARSE

    def up(category: str | None) -> str | None:
        return taxonomy.roll_up(category, classes) if category else category

    return [replace(r, boxes=[replace(b, category=up(b.category)) for b in r.boxes], birads=up(r.birads))
            for r in records]
