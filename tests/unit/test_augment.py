"""model/augment.py: a training rotation turns a box into the box around the rotated corners
(detectron2's) or around the rotated ellipse inscribed in it (item 56), and the training's own
mapper gives the boxes so."""

import numpy as np
import pytest

from model import datasets
from model.augment import ROTATIONS, EllipseRandomRotation, EllipseRotationTransform, training_augmentations
from model.config import TrainSettings
from model.train import to_detectron2
from tests.scripts import load_script

BOX = np.array([[40.0, 60.0, 190.0, 150.0]])  # 150 x 90, wider than tall as most lesions


CornersRotationTransform = ROTATIONS["corners"]  # detectron2's own (imported after model's fixes)


def box_around_rotated_ellipse(box: np.ndarray, rotation: EllipseRotationTransform) -> np.ndarray:
    """Numerically: points on the ellipse inscribed in ``box``, each rotated, then their box."""
    x0, y0, x1, y1 = box[0]
    t = np.linspace(0, 2 * np.pi, 20000)
    points = np.stack([(x0 + x1) / 2 + (x1 - x0) / 2 * np.cos(t), (y0 + y1) / 2 + (y1 - y0) / 2 * np.sin(t)], 1)
    moved = rotation.apply_coords(points)
    return np.array([moved[:, 0].min(), moved[:, 1].min(), moved[:, 0].max(), moved[:, 1].max()])


@pytest.mark.parametrize("angle", [-10.0, 3.0, 30.0, 90.0])
def test_a_box_rotates_as_the_ellipse_inscribed_in_it(angle):
    rotation = EllipseRotationTransform(240, 320, angle, expand=False)
    assert rotation.apply_box(BOX)[0] == pytest.approx(box_around_rotated_ellipse(BOX, rotation), abs=0.01)


def test_the_corners_box_grows_where_the_ellipses_keeps_the_lesions_extent():
    corners = CornersRotationTransform(240, 320, 5.0, expand=False).apply_box(BOX)[0]
    ellipse = EllipseRotationTransform(240, 320, 5.0, expand=False).apply_box(BOX)[0]
    height = lambda b: b[3] - b[1]  # noqa: E731
    assert height(corners) / 90 == pytest.approx(150 / 90 * np.sin(np.radians(5)) + np.cos(np.radians(5)))
    assert 1.0 < height(ellipse) / 90 < 1.01 < 1.12 < height(corners) / 90


def test_no_angle_leaves_boxes_as_they_are():
    assert EllipseRotationTransform(240, 320, 0.0, expand=False).apply_box(BOX) == pytest.approx(BOX)
    assert EllipseRotationTransform(240, 320, 0.0, expand=False).apply_box(np.zeros((0, 4))).shape == (0, 4)


def test_on_real_lesions_the_ellipse_is_nearer_the_rotated_masks_box(busbra_dir):
    rotation_targets = load_script("rotation_targets")
    records = [r for r in datasets.load(f"busbra:{busbra_dir}") if len(r.masks) == len(r.boxes) == 1]
    summary = rotation_targets.measure(records, degrees=10.0, angles=4, seed=0)
    assert summary["lesions"] == len(records) >= 8
    corners, ellipse = summary["corners"], summary["ellipse"]
    assert ellipse["iou_quartiles"][1] > corners["iou_quartiles"][1]
    assert abs(ellipse["height_ratio_quartiles"][1] - 1) < abs(corners["height_ratio_quartiles"][1] - 1)


def test_the_training_mapper_gives_the_ellipses_boxes(busbra_dir):
    from detectron2.data import DatasetMapper

    record = datasets.load(f"busbra:{busbra_dir}")[0]
    fixed = [EllipseRandomRotation([8.0, 8.0], expand=False, sample_style="range")]  # always 8 degrees
    mapper = DatasetMapper(is_train=True, augmentations=fixed, image_format="BGR")
    [dataset_dict] = to_detectron2([record], ["2", "3", "4", "5"])
    mapped = mapper(dict(dataset_dict))
    b = record.boxes[0]
    expected = EllipseRotationTransform(record.height, record.width, 8.0, expand=False).apply_box(
        np.array([[b.x0, b.y0, b.x1, b.y1]]))[0].clip(0, [record.width, record.height] * 2)
    assert mapped["instances"].gt_boxes.tensor[0].tolist() == pytest.approx(expected.tolist(), abs=0.01)


def test_the_setting_picks_the_rotation_and_refuses_an_unknown_one():
    from detectron2.data import transforms as T

    def rotation(box_rotation):
        augs = training_augmentations(TrainSettings(box_rotation=box_rotation), 320, 576)
        return next(a for a in augs if isinstance(a, T.RandomRotation))
    assert type(rotation("corners")) is T.RandomRotation
    assert isinstance(rotation("ellipse"), EllipseRandomRotation)
    with pytest.raises(ValueError, match="box rotation 'square'"):
        rotation("square")


def test_birads_train_takes_the_box_rotation_and_refuses_an_unknown_one(capsys):
    from model.cli import _settings, parser

    command = ["train", "--data", "busbra:x", "--out", "y"]
    assert _settings(parser().parse_args([*command, "--box-rotation", "ellipse"])).box_rotation == "ellipse"
    assert _settings(parser().parse_args(command)).box_rotation == "corners"
    with pytest.raises(SystemExit):
        parser().parse_args([*command, "--box-rotation", "square"])
    assert "invalid choice: 'square'" in capsys.readouterr().err


def test_rotation_targets_draws_the_rotated_lesions(busbra_dir, tmp_path, capsys):
    rotation_targets = load_script("rotation_targets")
    path = tmp_path / "rotated.png"
    assert rotation_targets.main(["--data", f"busbra:{busbra_dir}", "--angles", "1", "--picture", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert "| ellipse " in capsys.readouterr().out
