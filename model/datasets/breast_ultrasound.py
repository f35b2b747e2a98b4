"""Importers for the two public breast ultrasound datasets, laid out as in ``shared/data``.

Both accept any subset of the dataset's images: a CSV row whose image file is absent from the
folder is skipped (and counted in the log), so a folder holding a few images of the dataset
imports just those. A present image whose mask is missing, unreadable or of another size, or a row
with an unknown BI-RADS value, is an error naming the file and the CSV row.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import replace
from pathlib import Path

from model import taxonomy
from model.datasets.masks import mask_to_boxes, read_mask
from model.io import DataError, image_size
from model.records import Box, ImageRecord

log = logging.getLogger(__name__)


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))
    except FileNotFoundError:
        raise DataError(f"{path}: not found") from None


def _require(row: dict[str, str], columns: tuple[str, ...], where: str) -> None:
    missing = [c for c in columns if c not in row]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)}")


def _category(value: str, where: str) -> str:
    try:
        return taxonomy.normalize(value)
    except taxonomy.UnknownCategory as exc:
        raise DataError(f"{where}: {exc}") from None


def _boxes_from_masks(mask_paths: list[Path], size: tuple[int, int], category: str) -> list[Box]:
    boxes = []
    for mask_path in mask_paths:
        boxes += [Box(*xyxy, category=category) for xyxy in mask_to_boxes(read_mask(mask_path, size))]
    return boxes


def load_busbra(root: Path) -> list[ImageRecord]:
    """BUS-BRA: Images/, Masks/, bus_data.csv, 4-fold-cv.csv. Boxes come from the masks (the BBOX
    column is off by one pixel and wrong for bus_0845-s); splits are the patient-disjoint folds."""
    root = Path(root)
    folds = {r["ID"]: r["kFold"] for r in _read_csv(root / "4-fold-cv.csv")}
    records, skipped = [], 0
    for line, row in enumerate(_read_csv(root / "bus_data.csv"), start=2):
        where = f"{root / 'bus_data.csv'} row {line}"
        _require(row, ("ID", "Case", "Pathology", "BIRADS"), where)
        image_path = root / "Images" / f"{row['ID']}.png"
        if not image_path.exists():
            skipped += 1
            continue
        category = _category(row["BIRADS"], where)
        size = image_size(image_path)
        mask_path = root / "Masks" / f"{row['ID'].replace('bus_', 'mask_')}.png"
        boxes = _boxes_from_masks([mask_path], size, category)
        if not boxes:
            raise DataError(f"{mask_path} ({where}): mask has no lesion")
        fold = folds.get(row["ID"])
        records.append(ImageRecord(
            image_id=row["ID"], path=str(image_path.resolve()), width=size[0], height=size[1],
            boxes=boxes, patient=f"busbra-{row['Case']}", split=f"fold{fold}" if fold else None,
            birads=category, pathology=row["Pathology"].strip().lower() or None))
    log.info("BUS-BRA %s: %d images (%d CSV rows without an image here skipped)",
             root, len(records), skipped)
    return records


def _split_names(cell: str) -> list[str]:
    return [name.strip() for name in cell.split("&") if name.strip()]


def _owner(mask_name: str, image_names: list[str]) -> str:
    """The image a mask belongs to: the one whose stem begins the mask's name (case001_tumor)."""
    stems = sorted((Path(n).stem for n in image_names), key=len, reverse=True)
    return next((s for s in stems if mask_name.startswith(s)), Path(image_names[0]).stem)


def load_breast(root: Path) -> list[ImageRecord]:
    """BrEaST: images_and_masks/, clinical_data.csv. One patient per row, so splits are per image.

    Only the tumor masks become boxes, with the row's BI-RADS category. The "other" masks mark
    secondary findings (cysts, scars) whose BI-RADS is not recorded; inventing a category for them
    would teach the model false labels, so they are not used. BI-RADS 1 rows have no mask: the
    image has no lesion. Pathology is the Classification column (biopsy or follow-up verified);
    "normal" images count as not malignant. Splits "part1" / "part2": two halves stratified by
    BI-RADS (``_halves``), so that one can fine-tune or fit and the other test.
    """
    root = Path(root)
    folder = root / "images_and_masks"
    records, skipped = [], 0
    for line, row in enumerate(_read_csv(root / "clinical_data.csv"), start=2):
        where = f"{root / 'clinical_data.csv'} row {line}"
        _require(row, ("CaseID", "Image_filename", "Mask_tumor_filename", "BIRADS"), where)
        category = _category(row["BIRADS"], where)
        images = _split_names(row["Image_filename"])
        masks = _split_names(row["Mask_tumor_filename"])
        if category != taxonomy.NO_LESION and not masks:
            raise DataError(f"{where}: BI-RADS {category} but no tumor mask")
        for name in images:
            image_path = folder / name
            if not image_path.exists():
                skipped += 1
                continue
            size = image_size(image_path)
            own = [folder / m for m in masks if _owner(m, images) == Path(name).stem]
            boxes = _boxes_from_masks(own, size, category)
            if category != taxonomy.NO_LESION and not boxes:
                raise DataError(f"{own[0] if own else name} ({where}): mask has no lesion")
            records.append(ImageRecord(
                image_id=f"breast-{Path(name).stem}", path=str(image_path.resolve()),
                width=size[0], height=size[1], boxes=boxes, patient=f"breast-{row['CaseID']}",
                split=None, birads=category,
                pathology=(row.get("Classification") or "").strip().lower() or None))
    log.info("BrEaST %s: %d images (%d CSV rows without an image here skipped)",
             root, len(records), skipped)
    return _halves(records)


def _halves(records: list[ImageRecord]) -> list[ImageRecord]:
    """Patients of each BI-RADS category, in CaseID order, go alternately to part1 and part2."""
    patients: dict[str, list[str]] = {}
    for record in records:
        members = patients.setdefault(record.birads or "", [])
        if record.patient not in members:
            members.append(record.patient)
    part = {patient: f"part{1 + rank % 2}" for members in patients.values()
            for rank, patient in enumerate(sorted(members, key=_case_number))}
    return [replace(r, split=part[r.patient]) for r in records]


def _case_number(patient: str) -> tuple[int, str]:
    number = patient.rsplit("-", 1)[-1]
    return (int(number), "") if number.isdigit() else (0, number)
