"""Write imported records as Label Studio import JSON, COCO JSON and our own records file.

Every file is computed in memory before the first is written, and each is written atomically:
a failed import leaves no half-written output.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from urllib.parse import quote

from model import taxonomy
from model.io import DataError, StagedDirectory
from model.records import ImageRecord
from model.regions import to_region

LABEL_PREFIX = "BI-RADS "


def label_name(category: str) -> str:
    """The label text used in Label Studio configs we ship: "BI-RADS 4A"."""
    return LABEL_PREFIX + category


def image_reference(path: str, document_root: Path | None) -> str:
    """Absolute path, or a Label Studio local-files URL when a document root is given."""
    if document_root is None:
        return path
    try:
        relative = Path(path).resolve().relative_to(Path(document_root).resolve())
    except ValueError:
        raise DataError(f"{path} is not under the local-files document root {document_root}") from None
    return f"/data/local-files/?d={quote(str(relative))}"


def labelstudio_regions(record: ImageRecord, from_name: str, to_name: str) -> list[dict]:
    return [to_region(box, record.width, record.height, label_name(box.category), from_name, to_name,
                      f"{record.image_id}-{number}") for number, box in enumerate(record.boxes)]


def to_labelstudio(records: list[ImageRecord], as_predictions: bool = False,
                   document_root: Path | None = None, from_name: str = "label",
                   to_name: str = "image") -> list[dict]:
    tasks = []
    for record in records:
        data = {to_name: image_reference(record.path, document_root), "image_id": record.image_id,
                "patient": record.patient, "split": record.split, "birads": record.birads,
                "pathology": record.pathology}
        result = labelstudio_regions(record, from_name, to_name)
        if as_predictions:
            task = {"data": data, "predictions": [{"model_version": "expert-import", "result": result}]}
        else:
            task = {"data": data, "annotations": [{"result": result}]}
        tasks.append(task)
    return tasks


def to_coco(records: list[ImageRecord], classes: list[str]) -> dict:
    category_ids = {name: number for number, name in enumerate(classes, start=1)}
    images, annotations = [], []
    for image_number, record in enumerate(records, start=1):
        images.append({"id": image_number, "file_name": record.path, "width": record.width,
                       "height": record.height, "name": record.image_id, "patient": record.patient,
                       "split": record.split, "birads": record.birads, "pathology": record.pathology})
        for box in record.boxes:
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_number,
                "category_id": category_ids[taxonomy.roll_up(box.category, classes)],
                "bbox": [box.x0, box.y0, box.width, box.height], "area": box.area, "iscrowd": 0})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": i, "name": n} for n, i in category_ids.items()]}


def summary(records: list[ImageRecord]) -> dict:
    return {"images": len(records), "boxes": sum(len(r.boxes) for r in records),
            "patients": len({r.patient for r in records}),
            "splits": dict(Counter(str(r.split) for r in records)),
            "birads": dict(Counter(str(r.birads) for r in records)),
            "pathology": dict(Counter(str(r.pathology) for r in records))}


def write_dataset(records: list[ImageRecord], out: Path, as_predictions: bool = False,
                  document_root: Path | None = None) -> dict:
    """Write records.json, labelstudio.json, coco.json and summary.json into ``out``."""
    if not records:
        raise DataError("no images to write: the input held no usable image")
    classes = taxonomy.detector_classes(taxonomy.label_set_for(
        b.category for r in records for b in r.boxes))
    facts = summary(records)
    files = {
        "records.json": [r.to_dict() for r in records],
        "labelstudio.json": to_labelstudio(records, as_predictions, document_root),
        "coco.json": to_coco(records, classes),
        "summary.json": facts,
    }
    texts = {name: json.dumps(content, indent=1) for name, content in files.items()}
    with StagedDirectory(out) as staging:  # the four files appear together, or none does
        for name, text in texts.items():
            (staging / name).write_text(text)
    return facts
