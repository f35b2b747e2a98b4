"""The paper's training augmentation, drawn on the fly: flips, rotations and brightness."""

from __future__ import annotations

import numpy as np
from detectron2.data import transforms as T

from model.config import TrainSettings
from model.records import BOX_ROTATIONS


class EllipseRotationTransform(T.RotationTransform):
    """A rotation whose boxes are rotated as the ellipse inscribed in them.

    The box around a box's rotated corners is the rotated rectangle's envelope: at 5 degrees it is
    about 13 % taller than a 3:2 lesion's own box, and the box regression learns that growth
    (docs/results.md item 55). The ellipse through the box's edge midpoints, rotated, keeps the
    lesion's extent: its box has half-sides ``sqrt(a^2 cos^2 t + b^2 sin^2 t)`` and
    ``sqrt(a^2 sin^2 t + b^2 cos^2 t)`` for half-axes ``a``, ``b``. Boxes drawn as boxes (Label
    Studio's rectangles) have no mask to rotate, so the box's own shape is all there is to go on.
    """

    def apply_box(self, box: np.ndarray) -> np.ndarray:
        box = np.asarray(box, dtype=float).reshape(-1, 4)
        if len(box) == 0 or self.angle % 360 == 0:
            return box
        centres = self.apply_coords(np.stack([box[:, 0] + box[:, 2], box[:, 1] + box[:, 3]], axis=1) / 2)
        half_w, half_h = (box[:, 2] - box[:, 0]) / 2, (box[:, 3] - box[:, 1]) / 2
        cos, sin = np.cos(np.deg2rad(self.angle)), np.sin(np.deg2rad(self.angle))
        new_half_w = np.hypot(half_w * cos, half_h * sin)
        new_half_h = np.hypot(half_w * sin, half_h * cos)
        return np.stack([centres[:, 0] - new_half_w, centres[:, 1] - new_half_h,
                         centres[:, 0] + new_half_w, centres[:, 1] + new_half_h], axis=1)


class EllipseRandomRotation(T.RandomRotation):
    """detectron2's RandomRotation, its boxes rotated as ellipses (``EllipseRotationTransform``)."""

    def get_transform(self, image: np.ndarray) -> T.Transform:
        rotation = super().get_transform(image)
        if not isinstance(rotation, T.RotationTransform):  # a zero angle: no rotation at all
            return rotation
        return EllipseRotationTransform(rotation.h, rotation.w, rotation.angle, expand=rotation.expand,
                                        center=rotation.center, interp=rotation.interp)


# The transform behind each of records.BOX_ROTATIONS
ROTATIONS: dict[str, type[T.RotationTransform]] = {"corners": T.RotationTransform,
                                                   "ellipse": EllipseRotationTransform}


def random_rotation(degrees: float, box_rotation: str) -> T.Augmentation:
    """An angle drawn uniformly in +-``degrees``, boxes rotated as ``box_rotation`` says."""
    if box_rotation not in BOX_ROTATIONS:
        raise ValueError(f"box rotation {box_rotation!r}: expected one of {', '.join(BOX_ROTATIONS)}")
    kind = EllipseRandomRotation if box_rotation == "ellipse" else T.RandomRotation
    return kind([-degrees, degrees], expand=False, sample_style="range")


def training_augmentations(settings: TrainSettings, short: int, longest: int) -> list[T.Augmentation]:
    """Resize (short side ``short``, long side at most ``longest``), then the paper's augmentations.

    Rotation is small (default +-10 degrees): ultrasound frames always have the transducer at the
    top, and a rotated box is only an estimate of the rotated lesion's box (``ROTATIONS``).
    """
    augs: list[T.Augmentation] = [
        T.ResizeShortestEdge(short, longest, sample_style="choice"),
        T.RandomFlip(prob=0.5, horizontal=True, vertical=False),
        T.RandomFlip(prob=0.5, horizontal=False, vertical=True),
    ]
    if settings.rotation_degrees > 0:
        augs.append(random_rotation(settings.rotation_degrees, settings.box_rotation))
    low, high = settings.brightness
    if (low, high) != (1.0, 1.0):
        augs.append(T.RandomBrightness(low, high))
    return augs
