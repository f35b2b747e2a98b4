"""The detector's training images are read as prediction reads them (model.train.PixelsAsPredicted)."""

import numpy as np
from PIL import Image

from model.io import read_image
from model.records import Box, ImageRecord
from model.train import PixelsAsPredicted, to_detectron2


def _mapped(mapper_class, path, width: int, height: int) -> dict:
    record = ImageRecord("a", str(path), width, height, [Box(10, 20, 50, 60, "3")], birads="3")
    mapper = mapper_class(is_train=True, augmentations=[], image_format="BGR")
    return mapper(to_detectron2([record], ["2", "3", "4", "5"])[0])


def test_16_bit_grey_is_stretched_as_prediction_stretches_it(tmp_path):
    grey = np.tile(np.linspace(0, 4080, 80, dtype=np.uint16), (60, 1))  # a 12-bit scanner's range
    Image.fromarray(grey).save(tmp_path / "deep.png")
    mapped = _mapped(PixelsAsPredicted, tmp_path / "deep.png", 80, 60)
    expected = read_image(tmp_path / "deep.png")[:, :, ::-1].transpose(2, 0, 1)
    assert np.array_equal(mapped["image"].numpy(), expected) and int(mapped["image"].max()) == 255
    assert int((mapped["image"][0] == 255).sum()) == 60  # only the brightest column (clipped: 75 of 80)
    assert mapped["instances"].gt_boxes.tensor.tolist() == [[10.0, 20.0, 50.0, 60.0]]
    assert mapped["instances"].gt_classes.tolist() == [1]


def test_8_bit_images_map_as_detectron2_maps_them(busbra_dir):
    from detectron2.data import DatasetMapper

    path = busbra_dir / "Images" / "bus_0859-l.png"
    width, height = Image.open(path).size
    ours, theirs = (_mapped(m, path, width, height) for m in (PixelsAsPredicted, DatasetMapper))
    assert np.array_equal(ours["image"].numpy(), theirs["image"].numpy())
    assert ours["instances"].gt_boxes.tensor.tolist() == theirs["instances"].gt_boxes.tensor.tolist()
