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

    def __call__(self, batch, geometry=None):
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

        def forward(self, batch, geometry=None):
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


def _lesion_record(folder, name: str, outline: bool = True):
    """A dark image with one bright, irregular lesion whose mask is exactly its bright pixels."""
    from PIL import Image

    from model.records import Box, ImageRecord

    grey = np.full((200, 240), 40, np.uint8)
    grey[60:140, 80:170] = 230
    grey[60:90, 80:110] = 40  # a notch: the outline is not the box
    Image.fromarray(grey).save(folder / f"{name}.png")
    Image.fromarray(np.where(grey > 128, 255, 0).astype(np.uint8)).save(folder / f"{name}_mask.png")
    return ImageRecord(name, str(folder / f"{name}.png"), 240, 200, [Box(80, 60, 170, 140, "4")],
                       pathology="malignant", masks=[str(folder / f"{name}_mask.png")] if outline else [])


def test_outlines_are_cropped_jittered_and_flipped_exactly_as_the_pixels(tmp_path):
    from model.pretrain import CropSampler

    records = [_lesion_record(tmp_path, "a")]
    sampler = CropSampler(records, ["4", "background"], CropTraining(crop_size=64, outline_loss=1.0), train=True)
    for _ in range(6):  # random jitter, mirror, upside down, brightness each time
        pixels, outlines = sampler.batch(sampler.lesions)
        bright, inside = pixels[0, 0].numpy() > 128, outlines[0].numpy() > 0.5
        assert inside.sum() > 500 and (bright != inside).mean() < 0.03  # the same lesion, place, shape
        assert not inside[0:8, 0:8].all()  # context around it, not a crop of the outline's box


def test_an_outline_changes_nothing_the_classifier_sees(tmp_path):
    """The same seed draws the same crops with or without outlines (a lever's arms compare)."""
    import torch

    from model.pretrain import CropSampler

    records = [_lesion_record(tmp_path, "a")]
    plain = CropSampler(records, ["4", "background"], CropTraining(crop_size=64), train=True)
    outlined = CropSampler(records, ["4", "background"], CropTraining(crop_size=64, outline_loss=1.0), train=True)
    for _ in range(3):
        crops_plain, crops_outlined = plain.epoch(), outlined.epoch()
        assert [c.box for c in crops_plain] == [c.box for c in crops_outlined]
        pixels, outlines = plain.batch(crops_plain)
        assert outlines is None and torch.equal(pixels, outlined.batch(crops_outlined)[0])


def test_an_outline_is_known_from_masks_or_from_an_image_without_lesions(tmp_path):
    from model.pretrain import CropSampler
    from model.records import ImageRecord

    drawn = _lesion_record(tmp_path, "drawn", outline=False)  # boxes from Label Studio: no outline
    empty = ImageRecord("empty", drawn.path, 240, 200, [])     # no lesion: nothing to outline
    sampler = CropSampler([drawn, empty, _lesion_record(tmp_path, "a")], ["4", "background"],
                          CropTraining(crop_size=32, outline_loss=1.0), train=True)
    assert sampler.outlines[0] is None and not sampler.outlines[1].any() and sampler.outlines[2].any()
    _, outlines = sampler.batch(sampler.lesions)
    assert (outlines[0] == -1).all() and outlines[1].max() == 1.0


def test_the_outline_loss_counts_known_outlines_only():
    import torch

    from model.pretrain import Objective

    drawn = torch.full((2, 4, 4), -4.0)
    drawn[0, 1:3, 1:3] = 4.0  # the first crop's decoder draws the lesion in the middle
    truth = torch.zeros(2, 16, 16)
    truth[0, 4:12, 4:12] = 1.0
    right = Objective.outline_error(drawn[:1], truth[:1])
    assert right < 0.05
    assert Objective.outline_error(drawn, torch.stack([truth[0], torch.full((16, 16), -1.0)])) == right
    assert Objective.outline_error(drawn[1:], truth[:1]) > 1.0  # nothing drawn where the lesion is
    assert Objective.outline_error(drawn, torch.full((2, 16, 16), -1.0)) == 0.0
    assert CropTraining().outline_loss == 0.0  # off: +1.7 points over four folds, short of item 29's rule


def test_a_classifier_trained_with_outlines_serves_without_its_decoder(tmp_path):
    import torch

    from model.box_classifier import WEIGHTS, BoxClassifierSettings, build, train_box_classifier
    from model.pretrain import crop_classes

    records = [_lesion_record(tmp_path, name) for name in "abc"]
    settings = BoxClassifierSettings(outline_loss=1.0, epochs=2, batch_size=4, bf16=False)
    classes = crop_classes(records)
    category, malignant, outline = build(len(classes), outline=True).with_outline(torch.zeros(2, 3, 112, 112))
    assert category.shape == (2, len(classes)) and outline.shape == (2, 16, 16)  # 4 x 4 maps, 4x up
    with pytest.raises(ValueError, match="outline"):
        build(len(classes)).with_outline(torch.zeros(2, 3, 112, 112))
    target = train_box_classifier(records, tmp_path / "model", ["4"], settings)
    state = torch.load(target / WEIGHTS, weights_only=True)
    assert state and not any(k.startswith("outline.") for k in state)  # the decoder only trains
    build(2, geometry=settings.geometry).load_inference_state(state)  # served without it ("4" and background)
    with pytest.raises(RuntimeError, match="do not fit"):
        build(3).load_inference_state({"unexpected.weight": torch.zeros(1)})


def test_box_geometry_says_what_the_stretched_crop_hides():
    import torch

    from model.pretrain import GEOMETRY_FEATURES, box_geometry, geometry_tensor

    height, width = 400, 200  # not square: height and width cannot be swapped unseen
    box = (70.0, 110.0, 130.0, 290.0)  # 60 wide, 180 tall, centred in depth
    shape, size, depth = box_geometry(box, height, width)
    assert shape == pytest.approx(np.log(3))  # three times taller than wide
    assert size == pytest.approx(np.log(np.sqrt(60 * 180 / (400 * 200))) + 1.5)
    assert depth == pytest.approx(0.0)
    wide_and_deep = box_geometry((20.0, 340.0, 180.0, 380.0), height, width)
    assert wide_and_deep[0] < 0 and wide_and_deep[2] == pytest.approx(0.4)
    rows = geometry_tensor([box, box], [(height, width), (height, width, 3)])  # a grey or colour image's shape
    assert rows.shape == (2, GEOMETRY_FEATURES) and rows.dtype == torch.float32
    assert rows[1].tolist() == pytest.approx([shape, size, depth])
    assert geometry_tensor([], []).shape == (0, GEOMETRY_FEATURES)


def test_a_classifier_with_geometry_reads_it_beside_the_crop_and_serves_with_it(tmp_path):
    import torch
    from PIL import Image

    from model.box_classifier import BoxClassifier, BoxClassifierSettings, build, train_box_classifier
    from model.pretrain import CropSampler, crop_classes, crop_opinions, geometry_tensor
    from model.records import Box

    images = torch.zeros(2, 3, 112, 112)
    model = build(3, geometry=True).eval()
    with pytest.raises(ValueError, match="geometry"):
        model(images)
    with torch.no_grad():
        tall, _ = model(images, torch.tensor([[1.0, 0.0, 0.0]] * 2))
        wide, _ = model(images, torch.tensor([[-1.0, 0.0, 0.0]] * 2))
    assert not torch.equal(tall, wide)  # the same pixels, another shape: another reading

    records = [_lesion_record(tmp_path, name) for name in "abc"]
    settings = BoxClassifierSettings(geometry=True, epochs=2, batch_size=4, bf16=False)
    classes = crop_classes(records)
    sampler = CropSampler(records, classes, settings, train=False)
    assert sampler.geometry(sampler.lesions).shape == (len(sampler.lesions), 3)
    assert CropSampler(records, classes, BoxClassifierSettings(geometry=False), train=False).geometry(
        sampler.lesions) is None
    target = train_box_classifier(records, tmp_path / "model", ["4"], settings)
    served = BoxClassifier(target, ["4"], "cpu")
    assert served.model.geometry
    grey = np.asarray(Image.open(records[0].path))
    wide, tall = Box(80, 60, 170, 140, "4"), Box(105, 20, 145, 180, "4")  # the same lesion, boxed two ways
    opinions, malignancy = served.opinions(grey, [wide, tall])
    assert len(malignancy) == 2 and set(opinions[0]) == {"4", "background"}
    # served as trained: the crops' pixels with each box's geometry in the image
    crops = torch.from_numpy(np.stack([crop_pixels(grey, (b.x0, b.y0, b.x1, b.y1), served.settings)
                                       for b in (wide, tall)]))
    with torch.no_grad():
        expected, _ = crop_opinions(served.model, crops, False, geometry_tensor(
            [(b.x0, b.y0, b.x1, b.y1) for b in (wide, tall)], [grey.shape] * 2))
    assert [o["4"] for o in opinions] == pytest.approx(expected[:, 0].tolist(), abs=1e-6)
    with torch.no_grad():  # the same pixels read with the other box's shape: another reading
        swapped, _ = crop_opinions(served.model, crops, False, geometry_tensor(
            [(b.x0, b.y0, b.x1, b.y1) for b in (tall, wide)], [grey.shape] * 2))
    assert not torch.allclose(expected, swapped)


def test_a_classifier_saved_before_geometry_is_read_as_it_ran_and_not_fine_tuned_into_it(tmp_path):
    import json

    from model.box_classifier import META, BoxClassifier, BoxClassifierSettings, train_box_classifier

    records = [_lesion_record(tmp_path, name) for name in "abc"]
    parent = tmp_path / "parent"
    target = train_box_classifier(records, parent, ["4"], BoxClassifierSettings(
        geometry=False, epochs=1, batch_size=4, bf16=False))
    meta = json.loads((target / META).read_text())
    del meta["settings"]["geometry"]  # as classifier.json was written before the setting existed
    (target / META).write_text(json.dumps(meta))
    assert not BoxClassifier(target, ["4"], "cpu").model.geometry  # whatever the default becomes
    # a child whose heads read geometry starts afresh: its parent's heads are of another width
    child = train_box_classifier(records, tmp_path / "child", ["4"], BoxClassifierSettings(
        geometry=True, epochs=1, batch_size=4, bf16=False), parent=parent)
    assert json.loads((child / META).read_text())["fine_tuned_from"] is None
    assert BoxClassifier(child, ["4"], "cpu").model.geometry
