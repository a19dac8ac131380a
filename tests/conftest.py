"""Shared fixtures: real tiny ONNX models in a temp model folder, and settings pointing at them."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.config import Settings
from tests.support.onnx_models import write_model_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture()
def settings(tiny_model_dir: Path) -> Settings:
    return Settings(model_dir=tiny_model_dir, tile_batch_size=3)
