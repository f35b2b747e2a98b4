"""Backend fixtures: real Redis (127.0.0.1:6379, as on these machines and in CI), the app."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest
from redis import Redis

from backend.app import create_app
from backend.settings import Settings
from model.registry import Registry

REQUESTS = Path(__file__).resolve().parents[3] / "shared" / "label-studio-1.23.2" / "requests"
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


def recorded(name: str) -> dict:
    """A request real Label Studio 1.23.2 sent (shared/label-studio-1.23.2/requests)."""
    return json.loads((REQUESTS / f"{name}.json").read_text())


@pytest.fixture()
def redis_conn():
    connection = Redis.from_url(REDIS_URL)
    connection.ping()
    yield connection


@pytest.fixture()
def settings(tmp_path, busbra_dir) -> Settings:
    return Settings(model_dir=tmp_path / "models", redis_url=REDIS_URL,
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
