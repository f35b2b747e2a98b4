"""Importers for annotation files written by tools: COCO JSON and Label Studio JSON exports."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from model import regions, taxonomy
from model.io import DataError, image_size
from model.records import Box, ImageRecord

log = logging.getLogger(__name__)

# A label's name in a file -> its BI-RADS category, for names that are none (``--label b3=3``):
# a Label Studio export holds a label's alias, and no config to map it back.
LabelNames = Mapping[str, str]
ALIAS_HINT = "a label config's aliases? map them: --label NAME=CATEGORY"


def _read_json(path: Path) -> object:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: malformed JSON ({exc})") from None


def _named_category(name: object, labels: LabelNames | None = None) -> str:
    """The category a label name stands for: as ``labels`` maps it, else read as a BI-RADS name."""
    return taxonomy.normalize(labels[str(name)] if labels and str(name) in labels else name)


def _category(name: object, where: str, labels: LabelNames | None = None) -> str:
    try:
        return _named_category(name, labels)
    except taxonomy.UnknownCategory as exc:
        raise DataError(f"{where}: {exc}") from None


def _existing(path: Path, where: str) -> Path:
    if not path.is_file():
        raise DataError(f"{where}: image {path} not found")
    return path


def load_coco(path: Path, labels: LabelNames | None = None) -> list[ImageRecord]:
    """COCO detection JSON; ``file_name`` relative to the JSON's folder (or absolute).

    Category names are BI-RADS values ("4A", "BI-RADS 3", ...) or names ``labels`` maps. Optional
    per-image keys ``patient``, ``split``, ``birads`` and ``pathology`` are kept (our exporter writes them).
    """
    path = Path(path)
    data = _read_json(path)
    try:
        categories = {c["id"]: c["name"] for c in data["categories"]}
        images = data["images"]
        annotations = data["annotations"]
    except (KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a COCO detection file (missing {exc})") from None
    boxes: dict[int, list[Box]] = {}
    for index, ann in enumerate(annotations):
        where = f"{path} annotations[{index}]"
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
            cat_name = categories[ann["category_id"]]
            image_id = ann["image_id"]
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{where}: malformed annotation ({exc!r})") from None
        category = _category(cat_name, where, labels)
        if category == taxonomy.NO_LESION:  # BI-RADS 1 is "no lesion": no box, as from Label Studio
            log.warning("%s: a box labelled BI-RADS 1 (no lesion) is left out", where)
            continue
        if w <= 0 or h <= 0:
            raise DataError(f"{where}: a box of no size ({w:g} x {h:g})")
        boxes.setdefault(image_id, []).append(Box(x, y, x + w, y + h, category))
    records, known = [], set()
    for index, image in enumerate(images):
        where = f"{path} images[{index}]"
        try:
            image_path = _existing(path.parent / image["file_name"], where)
            image_id = image["id"]
        except (KeyError, TypeError) as exc:
            raise DataError(f"{where}: malformed image entry ({exc!r})") from None
        width, height = image_size(image_path)
        declared = (image.get("width"), image.get("height"))
        if None not in declared and declared != (width, height):  # its boxes are in another image's scale
            raise DataError(f"{where}: declared {declared[0]}x{declared[1]} px, but {image_path} is "
                            f"{width}x{height} (as displayed, EXIF orientation applied)")
        known.add(image_id)
        image_boxes = boxes.get(image_id, [])
        outside = [b for b in image_boxes if b.x1 <= 0 or b.y1 <= 0 or b.x0 >= width or b.y0 >= height]
        if outside:
            raise DataError(f"{where}: a box outside its {width}x{height} image: {outside[0]}")
        birads = image.get("birads")
        records.append(ImageRecord(
            image_id=str(image.get("name", image_id)), path=str(image_path.resolve()),
            width=width, height=height, boxes=image_boxes, patient=image.get("patient"),
            split=image.get("split"),
            birads=_category(birads, where) if birads else
            taxonomy.image_category(b.category for b in image_boxes),
            pathology=image.get("pathology")))
    orphans = [i for i in boxes if i not in known]
    if orphans:  # a "1" for a 1 would drop an image's boxes and call it lesion-free
        raise DataError(f"{path}: annotations for image ids {orphans[:5]!r} that no image has "
                        f"({sum(len(boxes[i]) for i in orphans)} boxes; ids must match the images' "
                        "exactly, type included)")
    return records


def _image_reference(task: dict) -> str | None:
    """The task's image: the data key its regions are drawn on (``to_name``), else "image", else
    its first text value (an export holds no label config to say which)."""
    data = task["data"]
    drawn_on = [r.get("to_name") for a in task.get("annotations") or [] if isinstance(a, dict)
                for r in a.get("result") or [] if isinstance(r, dict)]
    for key in (*drawn_on, "image"):
        if isinstance(key, str) and isinstance(data.get(key), str):
            return data[key]
    return next((v for v in data.values() if isinstance(v, str)), None)


def resolve_task_image(url: str, base: Path, image_root: Path | None) -> Path:
    """Local file behind a Label Studio task image reference.

    ``/data/local-files/?d=REL`` -> IMAGE_ROOT/REL (Label Studio's local-files document root);
    ``/data/upload/P/F`` -> IMAGE_ROOT/upload/P/F (Label Studio's media folder);
    a plain path -> relative to the export file.
    """
    parsed = urlparse(url)
    if parsed.path.startswith("/data/local-files"):
        relative = unquote(parse_qs(parsed.query).get("d", [""])[0])
        return (image_root or base) / relative
    if parsed.path.startswith("/data/"):
        return (image_root or base) / parsed.path[len("/data/"):]
    if parsed.scheme in ("http", "https", "s3", "gs"):
        raise DataError(f"{url}: remote images are not imported; download them and use paths")
    return base / unquote(parsed.path)


def _category_or_none(label: str, labels: LabelNames | None = None) -> str | None:
    try:
        return _named_category(label, labels)
    except taxonomy.UnknownCategory:
        return None


def _birads_control(tasks: list, where: Path, labels: LabelNames | None = None) -> str | None:
    """The RectangleLabels control (``from_name``) whose labels are BI-RADS categories, where an
    export holds several (calipers or other tools beside the lesions); None where it holds one.
    An export carries no label config, so the labels used tell the controls apart."""
    used: dict[str, set[str]] = {}  # tool -> the label names its regions hold
    for task in tasks:
        annotations = task.get("annotations") if isinstance(task, dict) else None
        for annotation in annotations if isinstance(annotations, list) else []:
            result = annotation.get("result") if isinstance(annotation, dict) else None
            for region in result if isinstance(result, list) else []:
                # a region naming no tool is read with any (model.regions), so it names none here
                if isinstance(region, dict) and region.get("type") == regions.TYPE and region.get("from_name"):
                    value = region.get("value")
                    named = value.get("rectanglelabels") if isinstance(value, dict) else None
                    used.setdefault(str(region["from_name"]), set()).update(
                        str(n) for n in (named if isinstance(named, list) else []))
    if len(used) < 2:
        return None
    birads = [c for c, names in used.items() if any(_category_or_none(n, labels) is not None for n in names)]
    if len(birads) != 1:
        raise DataError(f"{where}: {len(birads)} of its {len(used)} rectangle tools "
                        f"({', '.join(sorted(map(str, used)))}) hold BI-RADS labels; one must"
                        + ("" if birads else f" ({ALIAS_HINT})"))
    log.info("%s: rectangles of %s read; %s hold no BI-RADS label and are passed over", where, birads[0],
             ", ".join(sorted(str(c) for c in used if c != birads[0])))
    return birads[0]


def load_labelstudio(path: Path, image_root: Path | None = None,
                     min_agreement: int = regions.DEFAULT_MIN_AGREEMENT,
                     labels: LabelNames | None = None) -> list[ImageRecord]:
    """A Label Studio JSON export: RectangleLabels regions over an Image, percent coordinates.

    Which annotation counts follows ``model.regions``, as in the backend's training: ground truth,
    consensus of several experts, an empty annotation as "no lesion". Tasks without a usable
    annotation, or whose experts disagree, are left out (and logged); a label that is no BI-RADS
    category is an error, but for those of a second rectangle tool with no BI-RADS label at all
    (calipers), which is passed over.
    """
    path = Path(path)
    tasks = _read_json(path)
    if not isinstance(tasks, list):
        raise DataError(f"{path}: a Label Studio export is a JSON list of tasks")
    records, skipped, ids = [], [], set()
    control = _birads_control(tasks, path, labels)
    read = partial(_category_or_none, labels=labels)
    for index, task in enumerate(tasks):
        where = f"{path} task[{index}]"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise DataError(f"{where}: malformed task (no 'data' object)")
        unknown: Counter = Counter()
        labelled = regions.task_boxes(task, read, min_agreement, unknown, control)
        if labelled.status == regions.MALFORMED:
            raise DataError(f"{where} {labelled.detail}")
        if unknown:
            raise DataError(f"{where}: labels that are no BI-RADS category: {', '.join(sorted(unknown))} "
                            f"({ALIAS_HINT})")
        if labelled.status != regions.OK:  # not labelled yet, or the experts disagree
            skipped.append((task.get("id", index), labelled.status))
            continue
        url = _image_reference(task)
        if url is None:
            raise DataError(f"{where}: task data has no image reference")
        image_path = _existing(resolve_task_image(url, path.parent, image_root), where)
        width, height = image_size(image_path)
        boxes = [regions.in_pixels(b, width, height) for b in labelled.boxes]
        data = task["data"]
        # what our own export writes beside the image (model.datasets.export): kept on the way back
        kept = {key: data[key] for key in ("split", "pathology") if isinstance(data.get(key), str)}
        named = data.get("image_id")
        image_id = str(named if isinstance(named, str) and named not in ids else task.get("id", index))
        ids.add(image_id)  # a task duplicated in Label Studio keeps an id of its own
        records.append(ImageRecord(
            image_id=image_id,
            path=str(image_path.resolve()), width=width, height=height, boxes=boxes,
            birads=taxonomy.image_category(b.category for b in boxes), patient=regions.task_patient(data), **kept))
    if skipped:
        log.warning("%s: %d tasks left out (not annotated, or experts disagree): %s", path, len(skipped),
                    skipped[:20])
    return records
