"""How a lesion box becomes the crop the crop classifiers read (model.pretrain.crop_pixels)."""

import numpy as np
import pytest

from model.pretrain import CropTraining, crop_pixels


def _bright_extent(crop: np.ndarray) -> tuple[int, int]:
    """Height and width of the bright region of one channel of a crop."""
    rows, cols = np.nonzero(crop[0] > 128)
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


@pytest.fixture
def tall_lesion() -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A bright lesion three times taller than wide on a dark image, and its box."""
    grey = np.zeros((300, 300), np.uint8)
    grey[60:240, 120:180] = 255
    return grey, (120.0, 60.0, 180.0, 240.0)


def test_the_default_crop_stretches_every_box_to_a_square(tall_lesion):
    grey, box = tall_lesion
    crop = crop_pixels(grey, box, CropTraining(crop_size=96))
    assert crop.shape == (3, 96, 96) and np.array_equal(crop[0], crop[2])
    height, width = _bright_extent(crop)
    assert abs(height - width) <= 2  # "taller than wide" is gone
    assert height == pytest.approx(96 / 1.5, abs=2)


def test_keep_aspect_keeps_a_tall_lesion_tall(tall_lesion):
    grey, box = tall_lesion
    crop = crop_pixels(grey, box, CropTraining(crop_size=96, keep_aspect=True))
    height, width = _bright_extent(crop)
    assert height == pytest.approx(96 / 1.5, abs=2)  # the longer side fills the crop as before
    assert height / width == pytest.approx(3.0, rel=0.1)


def test_keep_aspect_with_augmentation_keeps_the_shape_within_the_jitter(tall_lesion):
    import random

    grey, box = tall_lesion
    settings = CropTraining(crop_size=96, keep_aspect=True)
    for seed in range(5):
        height, width = _bright_extent(crop_pixels(grey, box, settings, random.Random(seed)))
        low, high = (1 - settings.jitter) / (1 + settings.jitter), (1 + settings.jitter) / (1 - settings.jitter)
        assert 3.0 * low <= height / width <= 3.0 * high


def test_without_vertical_flips_depth_always_runs_down():
    """A lesion with a shadow below it: training crops flip it sideways, never upside down."""
    import random

    grey = np.zeros((300, 300), np.uint8)
    grey[100:150, 100:200] = 255   # the lesion's upper half bright, its shadow below dark
    box = (100.0, 100.0, 200.0, 200.0)
    upright = CropTraining(crop_size=64, vertical_flip=False)
    flipped = CropTraining(crop_size=64)
    tops = {seed: crop_pixels(grey, box, upright, random.Random(seed))[0] for seed in range(12)}
    assert all(crop[:32].mean() > crop[32:].mean() for crop in tops.values())
    assert any(crop[:32].mean() < crop[32:].mean()
               for crop in (crop_pixels(grey, box, flipped, random.Random(s))[0] for s in range(12)))


def test_label_smoothing_softens_the_category_target():
    import torch

    from model.pretrain import Crop, _losses

    class Confident(torch.nn.Module):
        """Sure of category 0 for every crop; no pathology to learn."""

        def forward(self, batch):
            return torch.tensor([[8.0, -8.0, -8.0]]).repeat(len(batch), 1), torch.zeros(len(batch))

    crops = [Crop(0, (0, 0, 1, 1), 0, -1.0)]
    batch, weights = torch.zeros(1, 3, 8, 8), torch.ones(3)
    sharp = _losses(Confident(), batch, crops, weights, 0.0)
    soft = _losses(Confident(), batch, crops, weights, 0.1)
    assert sharp.item() < 1e-6 < soft.item()  # a confident right answer still costs when smoothed
    assert CropTraining().label_smoothing == 0.0  # the default trains on the experts' reading as it is
