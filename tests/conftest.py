"""Shared fixtures: the sample images in tests/data (see tests/data/README.md for their source)."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def busbra_dir() -> Path:
    return DATA / "busbra"


@pytest.fixture(scope="session")
def breast_dir() -> Path:
    return DATA / "breast"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, busbra_dir) -> Path:
    """A real (barely trained) model directory: R50-FPN, 128 px, 3 iterations (~15 s).

    Its boxes are not good; it is for tests about plumbing, not accuracy."""
    from model import datasets
    from model.config import TrainSettings
    from model.train import train

    out = tmp_path_factory.mktemp("tiny") / "model"
    train(datasets.load(f"busbra:{busbra_dir}"), out, TrainSettings(
        base_config="COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml", image_size=128, max_iter=3,
        num_workers=0, warmup_iters=1))
    return out
