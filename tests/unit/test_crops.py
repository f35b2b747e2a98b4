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


class Confident:
    """Sure of one category for every crop (classes 2, 3, 4, 5, background); no pathology to learn."""

    def __init__(self, category: int, classes: int = 5) -> None:
        self.category, self.classes = category, classes

    def __call__(self, batch):
        import torch

        logits = torch.full((len(batch), self.classes), -8.0)
        logits[:, self.category] = 8.0
        return logits, torch.zeros(len(batch))


def _objective(**settings):
    import torch

    from model.pretrain import Objective

    return Objective.of(["2", "3", "4", "5", "background"], torch.ones(5), CropTraining(**settings))


def _loss(objective, model, category: int) -> float:
    import torch

    from model.pretrain import Crop

    return objective(model, torch.zeros(1, 3, 8, 8), [Crop(0, (0, 0, 1, 1), category, -1.0)]).item()


def test_label_smoothing_softens_the_category_target():
    sharp, soft = _objective(ordinal_loss=0.0), _objective(ordinal_loss=0.0, label_smoothing=0.1)
    assert _loss(sharp, Confident(0), 0) < 1e-6 < _loss(soft, Confident(0), 0)  # a right answer still costs
    assert CropTraining().label_smoothing == 0.0  # the default trains on the experts' reading as it is


def test_the_ordinal_loss_costs_more_the_further_the_category_is_from_the_truth():
    plain, ordinal = _objective(ordinal_loss=0.0), _objective(ordinal_loss=1.0)
    # A BI-RADS 3 (index 1) called 4 or called 5: the same cross-entropy, not the same distance.
    assert _loss(plain, Confident(2), 1) == pytest.approx(_loss(plain, Confident(3), 1))
    near, far = _loss(ordinal, Confident(2), 1), _loss(ordinal, Confident(3), 1)
    assert near - _loss(plain, Confident(2), 1) == pytest.approx(1.0, abs=1e-3)  # one rank step
    assert far - _loss(plain, Confident(3), 1) == pytest.approx(2.0, abs=1e-3)   # two
    assert _loss(ordinal, Confident(1), 1) < 1e-3                                # right: nothing added
    # A background crop has no rank: the ordinal term leaves it to the cross-entropy.
    assert _loss(ordinal, Confident(0), 4) == pytest.approx(_loss(plain, Confident(0), 4))
    assert CropTraining().ordinal_loss == 1.0  # the default since docs/results.md item 27


def test_the_ordinal_loss_follows_rank_order_not_the_class_list_order():
    import torch

    from model.pretrain import Objective

    objective = Objective.of(["5", "2", "background", "3"], torch.ones(4), CropTraining(ordinal_loss=1.0))
    assert objective.ranked == [1, 3, 0]  # 2, 3, 5


def test_reading_a_crop_with_its_mirror_image_averages_the_two_opinions():
    import torch

    from model.pretrain import crop_opinions

    class LeftHeavy(torch.nn.Module):
        """Category 0 when the left half is brighter, else category 1; P(malignant) likewise."""

        def forward(self, batch):
            left = batch[..., : batch.shape[-1] // 2].mean() - batch[..., batch.shape[-1] // 2:].mean()
            logits = torch.stack([left, -left]).repeat(len(batch), 1)
            return logits, left.repeat(len(batch))

    batch = torch.zeros(2, 3, 8, 8)
    batch[..., :4] = 1.0
    once, malignant_once = crop_opinions(LeftHeavy(), batch, flip=False)
    both, malignant_both = crop_opinions(LeftHeavy(), batch, flip=True)
    assert once[0, 0] > 0.6 and malignant_once[0] > 0.6
    assert torch.allclose(both, torch.full_like(both, 0.5))  # the mirror image says the opposite
    assert torch.allclose(malignant_both, torch.full_like(malignant_both, 0.5))
    assert CropTraining().flip_at_test is False
