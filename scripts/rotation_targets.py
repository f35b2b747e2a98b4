"""How faithful a rotated training box is to the rotated lesion: each expert box rotated as the
training rotates it (``model/augment.py``: the box around its rotated corners, or the rotated
ellipse inscribed in it) against the box of the expert's rotated mask, the lesion's true extent
after the rotation (docs/results.md item 56). Runs no model; reads the images' masks.

    python scripts/rotation_targets.py --data busbra:../shared/data/BUS-BRA --splits fold1 fold2 fold3
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from model import datasets  # noqa: E402
from model.augment import ROTATIONS  # noqa: E402
from model.datasets.masks import read_mask  # noqa: E402
from model.io import read_image  # noqa: E402
from model.records import BOX_ROTATIONS, Box, ImageRecord  # noqa: E402


def mask_box(mask: np.ndarray) -> np.ndarray | None:
    """The box around a mask's lesion pixels, in the (x0, y0, x1, y1) pixel-edge convention."""
    ys, xs = np.nonzero(mask)
    return None if len(xs) == 0 else np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=float)


def lesions(records: list[ImageRecord]) -> Iterator[tuple[ImageRecord, np.ndarray, np.ndarray]]:
    """Each record with one outline and one box (so the two are paired for sure): the record, its
    mask (uint8, as detectron2 rotates segmentations) and its box as an XYXY array, read lazily."""
    for record in records:
        if len(record.masks) == len(record.boxes) == 1:
            mask = read_mask(Path(record.masks[0]), (record.width, record.height)).astype(np.uint8)
            b = record.boxes[0]
            yield record, mask, np.array([b.x0, b.y0, b.x1, b.y1], dtype=float)


def rotated_boxes(mask: np.ndarray, box: np.ndarray, angle: float) -> dict[str, np.ndarray] | None:
    """The rotated mask's box ("mask") and the box rotated each way, clipped to the image as
    detectron2's mapper clips them; None where the rotation pushes the lesion out of the frame."""
    height, width = mask.shape
    boxes: dict[str, np.ndarray] = {}
    for name in BOX_ROTATIONS:
        rotation = ROTATIONS[name](height, width, angle, expand=False)
        boxes[name] = np.clip(rotation.apply_box(box[None])[0], 0, [width, height, width, height])
    truth = mask_box(ROTATIONS["corners"](height, width, angle, expand=False).apply_segmentation(mask))
    if truth is None:
        return None
    return {"mask": truth, **boxes}


def measure(records, degrees: float, angles: int, seed: int) -> dict:
    """Width and height ratios and IoU of each way's boxes against the rotated masks' boxes, over
    ``angles`` angles per lesion drawn uniformly in +-``degrees``."""
    generator = np.random.default_rng(seed)
    rows: dict[str, list[tuple[float, float, float]]] = {name: [] for name in BOX_ROTATIONS}
    paired = 0
    for _, mask, box in lesions(records):
        paired += 1
        for angle in generator.uniform(-degrees, degrees, angles):
            boxes = rotated_boxes(mask, box, float(angle))
            if boxes is None:
                continue
            truth = Box(*boxes["mask"], category="lesion")
            for name in BOX_ROTATIONS:
                b = Box(*boxes[name], category="lesion")
                rows[name].append((b.width / truth.width, b.height / truth.height, b.iou(truth)))
    summary: dict = {"lesions": paired, "degrees": degrees, "angles_per_lesion": angles}
    for name, values in rows.items():
        data = np.array(values)
        summary[name] = {"boxes": len(data),
                         **{f"{what}_quartiles": np.percentile(data[:, i], [25, 50, 75]).round(4).tolist()
                            for i, what in enumerate(("width_ratio", "height_ratio", "iou"))},
                         "share_iou_at_least_0.9": float((data[:, 2] >= 0.9).mean())}
    return summary


def picture(records, degrees: float, path: Path, count: int = 4) -> None:
    """The first ``count`` lesions, each rotated by ``degrees``: the rotated mask's outline and its
    box (green), the box rotated by its corners (red) and as an ellipse (blue)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    chosen = list(itertools.islice(lesions(records), count))
    figure, axes_row = plt.subplots(1, len(chosen), figsize=(4 * len(chosen), 4), squeeze=False)
    for axes, (record, mask, box) in zip(axes_row[0], chosen):
        rotation = ROTATIONS["corners"](record.height, record.width, degrees, expand=False)
        boxes = rotated_boxes(mask, box, degrees)
        axes.imshow(rotation.apply_image(read_image(record.path)), cmap="gray")
        axes.contour(rotation.apply_segmentation(mask), levels=[0.5], colors="lime", linewidths=0.8)
        for name, color in (("mask", "lime"), ("corners", "red"), ("ellipse", "deepskyblue")):
            if boxes is None:
                continue
            x0, y0, x1, y1 = boxes[name]
            axes.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=color, linewidth=1.2,
                                         label={"mask": "rotated mask's box"}.get(name, f"box rotated as {name}")))
        axes.set_title(f"{record.image_id}, {degrees:g} degrees", fontsize=9)
        axes.axis("off")
    axes_row[0][0].legend(loc="lower left", fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--splits", nargs="*")
    parser.add_argument("--degrees", type=float, default=10.0, help="the training's rotation range (default 10)")
    parser.add_argument("--angles", type=int, default=4, help="angles drawn per lesion (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--picture", type=Path, help="also draw the first lesions rotated by --degrees (a PNG)")
    args = parser.parse_args(argv)
    records = [r for r in datasets.load(args.data) if not args.splits or r.split in args.splits]
    if args.picture:
        picture(records, args.degrees, args.picture)
    summary = measure(records, args.degrees, args.angles, args.seed)
    print(tabulate([[name, summary[name]["boxes"], *(" / ".join(f"{v:.3f}" for v in summary[name][f"{w}_quartiles"])
                                                     for w in ("width_ratio", "height_ratio", "iou")),
                     f"{summary[name]['share_iou_at_least_0.9']:.1%}"] for name in BOX_ROTATIONS],
                   ["box rotated as", "boxes", "width / the mask's (quartiles)", "height / the mask's",
                    "IoU with the mask's box", "IoU >= 0.9"], tablefmt="github"))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
