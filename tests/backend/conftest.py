"""Backend fixtures: real Redis (tests/conftest.py's ``redis_server``), the app, and the requests
real Label Studio 1.23.2 sent (recorded in tests/backend/requests)."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
from redis import Redis

from backend.app import create_app
from backend.settings import Settings
from model.registry import Registry
from tests.conftest import redis_database

REQUESTS = Path(__file__).resolve().parent / "requests"


def recorded(name: str) -> dict:
    """A request real Label Studio 1.23.2 sent (tests/backend/requests)."""
    return json.loads((REQUESTS / f"{name}.json").read_text())


@pytest.fixture()
def redis_url(redis_server) -> str:
    return redis_database(redis_server, 13)


@pytest.fixture()
def redis_conn(redis_url):
    connection = Redis.from_url(redis_url)
    connection.ping()
    yield connection


@pytest.fixture()
def settings(tmp_path, busbra_dir, redis_url) -> Settings:
    return Settings(model_dir=tmp_path / "models", redis_url=redis_url,
                    queue_name=f"test-{uuid.uuid4().hex[:8]}", local_files_root=busbra_dir.parent,
                    retrain_after=3, label_studio_url="http://localhost:8080")


@pytest.fixture()
def client(settings):
    return create_app(settings).test_client()


def install_model(settings: Settings, project: int, model_dir: Path, version: str = "v-test") -> str:
    registry = Registry(settings.model_dir / f"project-{project}")
    shutil.copytree(model_dir, registry.path(version))
    registry.describe(version, parent=None)
    registry.promote(version)
    return version
