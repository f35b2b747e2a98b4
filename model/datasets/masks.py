"""Lesion masks -> boxes: one box per connected lesion component, tiny specks dropped."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from model.io import DataError

# A component smaller than this share of the mask's largest component, or than MIN_PIXELS, is an
# annotation speck (a stray brush stroke), not a lesion.
MIN_SHARE_OF_LARGEST = 0.05
MIN_PIXELS = 16


def read_mask(path: Path, expected_size: tuple[int, int]) -> np.ndarray:
    """Binary mask (bool HxW) of an image of ``expected_size`` (width, height)."""
    try:
        with Image.open(path) as image:
            if image.size != expected_size:
                raise DataError(f"{path}: mask is {image.size[0]}x{image.size[1]} but its image is "
                                f"{expected_size[0]}x{expected_size[1]}")
            data = np.asarray(image.convert("L"))
    except FileNotFoundError:
        raise DataError(f"{path}: mask not found") from None
    except OSError as exc:
        raise DataError(f"{path}: not a readable mask ({exc})") from None
    return data > 127


def mask_to_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """XYXY pixel boxes (exclusive right/bottom edge) of the mask's lesion components."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    components = stats[1:count]  # row 0 is the background
    if len(components) == 0:
        return []
    largest = components[:, cv2.CC_STAT_AREA].max()
    boxes = []
    for x, y, w, h, area in components:
        if area >= MIN_PIXELS and area >= MIN_SHARE_OF_LARGEST * largest:
            boxes.append((int(x), int(y), int(x + w), int(y + h)))
    return sorted(boxes)
