"""The paper's training augmentation, drawn on the fly: flips, rotations and brightness."""

from __future__ import annotations

from detectron2.data import transforms as T

from model.config import TrainSettings


def training_augmentations(settings: TrainSettings, short: int, longest: int) -> list[T.Augmentation]:
    """Resize (short side ``short``, long side at most ``longest``), then the paper's augmentations.

    Rotation is small (default +-10 degrees): a rotated box is the bounding box of the rotated
    corners, so large angles would teach the model loose boxes; ultrasound frames also always
    have the transducer at the top.
    """
    augs: list[T.Augmentation] = [
        T.ResizeShortestEdge(short, longest, sample_style="choice"),
        T.RandomFlip(prob=0.5, horizontal=True, vertical=False),
        T.RandomFlip(prob=0.5, horizontal=False, vertical=True),
    ]
    if settings.rotation_degrees > 0:
        augs.append(T.RandomRotation([-settings.rotation_degrees, settings.rotation_degrees],
                                     expand=False, sample_style="range"))
    low, high = settings.brightness
    if (low, high) != (1.0, 1.0):
        augs.append(T.RandomBrightness(low, high))
    return augs
