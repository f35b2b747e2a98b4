"""Importers for the two public breast ultrasound datasets, as their publishers ship them.

BUS-BRA (Zenodo) ships ``Images/``, ``Masks/``, ``bus_data.csv`` and patient-disjoint fold files
``5-fold-cv.csv`` and ``10-fold-cv.csv``; some copies add a ``4-fold-cv.csv``. BrEaST (TCIA) ships
``BrEaST-Lesions_USG-images_and_masks/`` beside ``BrEaST-Lesions-USG-clinical-data-*.xlsx``; a
converted copy may hold ``images_and_masks/`` and ``clinical_data.csv`` instead. Both layouts read.

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


BUSBRA_FOLD_FILES = ("4-fold-cv.csv", "5-fold-cv.csv", "10-fold-cv.csv")  # the first one present
BREAST_TABLES = ("clinical_data.csv", "*clinical-data*.xlsx", "*clinical_data*.xlsx")
BREAST_FOLDERS = ("images_and_masks", "*images_and_masks")


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # a table re-saved by Excel starts with a BOM
            return list(csv.DictReader(handle))
    except FileNotFoundError:
        raise DataError(f"{path}: not found") from None


def _cell(value: object) -> str:
    """A spreadsheet cell as the CSV export would write it (2.0 -> "2", empty -> "")."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _read_xlsx(path: Path) -> list[dict[str, str]]:
    """The first sheet of a spreadsheet as rows keyed by the header row."""
    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises several kinds for a damaged file
        raise DataError(f"{path}: not a readable spreadsheet ({exc})") from None
    try:  # read-only: the sheet itself is parsed here, row by row
        rows = book.worksheets[0].iter_rows(values_only=True)
        header = [_cell(v).strip() for v in next(rows, ())]
        table = [{h: _cell(v).strip() for h, v in zip(header, row) if h} for row in rows]
    except Exception as exc:  # a damaged sheet: XML or zip errors
        raise DataError(f"{path}: not a readable spreadsheet ({type(exc).__name__}: {exc})") from None
    finally:
        book.close()
    return [row for row in table if any(row.values())]


def _first(root: Path, patterns: tuple[str, ...], what: str) -> Path:
    for pattern in patterns:
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
    raise DataError(f"{root}: no {what} (looked for {', '.join(patterns)})")


def _read_table(path: Path) -> list[dict[str, str]]:
    return _read_xlsx(path) if path.suffix.lower() == ".xlsx" else _read_csv(path)


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


def _unpacked(root: Path, patterns: tuple[str, ...]) -> Path:
    """``root``, or its only folder where the download unpacked into one (BUSBRA.zip -> BUSBRA/)
    and ``root`` itself holds none of ``patterns``."""
    root = Path(root)
    if any(next(root.glob(p), None) for p in patterns):
        return root
    folders = [f for f in root.iterdir() if f.is_dir() and not f.name.startswith(".")] if root.is_dir() else []
    if len(folders) == 1 and any(next(folders[0].glob(p), None) for p in patterns):
        log.info("%s: reading the dataset unpacked in %s", root, folders[0].name)
        return folders[0]
    return root


def load_busbra(root: Path) -> list[ImageRecord]:
    """BUS-BRA: Images/, Masks/, bus_data.csv and a fold file (in ``root`` or the one folder the
    download unpacked into). Boxes come from the masks (the BBOX column is off by one pixel and
    wrong for bus_0845-s); splits are the patient-disjoint folds of the first of
    ``BUSBRA_FOLD_FILES`` present (fold1..foldK); with none, images have no split."""
    root = _unpacked(root, ("bus_data.csv",))
    folds = _busbra_folds(root)
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
            birads=category, pathology=row["Pathology"].strip().lower() or None,
            masks=[str(mask_path.resolve())]))
    log.info("BUS-BRA %s: %d images (%d CSV rows without an image here skipped)",
             root, len(records), skipped)
    unfolded = sum(1 for r in records if r.split is None)
    if unfolded:  # they belong to no split: --splits leaves them out
        log.warning("BUS-BRA %s: %d images are in no fold of the fold file", root, unfolded)
    return records


def _busbra_folds(root: Path) -> dict[str, str]:
    for name in BUSBRA_FOLD_FILES:
        if (root / name).is_file():
            rows = _read_csv(root / name)
            if rows:
                _require(rows[0], ("ID", "kFold"), str(root / name))
            log.info("BUS-BRA folds from %s", name)
            return {r["ID"]: r["kFold"] for r in rows}
    log.warning("BUS-BRA %s: no fold file (%s): images have no split", root, ", ".join(BUSBRA_FOLD_FILES))
    return {}


def _split_names(cell: str) -> list[str]:
    return [name.strip() for name in cell.split("&") if name.strip()]


def _owner(mask_name: str, image_names: list[str]) -> str:
    """The image a mask belongs to: the one whose stem begins the mask's name (case001_tumor)."""
    stems = sorted((Path(n).stem for n in image_names), key=len, reverse=True)
    return next((s for s in stems if mask_name.startswith(s)), Path(image_names[0]).stem)


def load_breast(root: Path) -> list[ImageRecord]:
    """BrEaST: the image-and-mask folder and the clinical table (either layout, see the module).
    One patient per row, so splits are per image.

    Only the tumor masks become boxes, with the row's BI-RADS category. The "other" masks mark
    secondary findings (cysts, scars) whose BI-RADS is not recorded; inventing a category for them
    would teach the model false labels, so they are not used. BI-RADS 1 rows have no mask: the
    image has no lesion. Pathology is the Classification column (biopsy or follow-up verified);
    "normal" images count as not malignant. Splits "part1" / "part2": two halves stratified by
    BI-RADS (``_halves``), so that one can fine-tune or fit and the other test.
    """
    root = _unpacked(root, BREAST_TABLES)
    folder = _first(root, BREAST_FOLDERS, "image and mask folder")
    table = _first(root, BREAST_TABLES, "clinical data table")
    records, skipped = [], 0
    for line, row in enumerate(_read_table(table), start=2):
        where = f"{table} row {line}"
        _require(row, ("CaseID", "Image_filename", "Mask_tumor_filename", "BIRADS"), where)
        images = _split_names(row["Image_filename"])
        present = [name for name in images if (folder / name).exists()]
        skipped += len(images) - len(present)
        if not present:  # a subset of the images: the rows of the others are not checked either
            continue
        category = _category(row["BIRADS"], where)
        masks = _split_names(row["Mask_tumor_filename"])
        if category != taxonomy.NO_LESION and not masks:
            raise DataError(f"{where}: BI-RADS {category} but no tumor mask")
        for name in present:
            image_path = folder / name
            size = image_size(image_path)
            own = [folder / m for m in masks if _owner(m, images) == Path(name).stem]
            boxes = _boxes_from_masks(own, size, category)
            if category != taxonomy.NO_LESION and not boxes:
                raise DataError(f"{own[0] if own else name} ({where}): mask has no lesion")
            records.append(ImageRecord(
                image_id=f"breast-{Path(name).stem}", path=str(image_path.resolve()),
                width=size[0], height=size[1], boxes=boxes, patient=f"breast-{row['CaseID']}",
                split=None, birads=category,
                pathology=(row.get("Classification") or "").strip().lower() or None,
                masks=[str(m.resolve()) for m in own]))
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
