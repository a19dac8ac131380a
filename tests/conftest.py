"""Shared fixtures: real tiny ONNX models in a temp model folder, and settings pointing at them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.config import Settings
from tests.support.onnx_models import write_model_dir
from tests.support.processes import require_redis


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture()
def settings(tiny_model_dir: Path) -> Settings:
    return Settings(model_dir=tiny_model_dir, tile_batch_size=3)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A real Redis database of the tests' own (db 15 by default), emptied once per session."""
    url = os.environ.get("IMGRESTORE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    require_redis(url).flushdb()  # a database of its own: the tests own everything in it
    return url
