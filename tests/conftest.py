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
