"""Shared fixtures: real tiny ONNX models in a temp model folder, and settings pointing at them; and the
``integration`` mark, which ``-m "not integration"`` leaves out to get the fast subset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.config import Settings
from tests.support.onnx_models import write_model_dir
from tests.support.processes import require_redis

# Left out of the fast subset (``-m "not integration"``), besides every test marked ``slow``: the folders whose tests
# start processes (workers, moto's S3 server, the API over HTTP) or train and export models with torch.
INTEGRATION_DIRS = {Path(__file__).parent / name for name in ("integration", "training", "export")}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Gives the ``integration`` mark to every test of ``INTEGRATION_DIRS`` and every ``slow`` one. A ``pytestmark``
    in a conftest is ignored by pytest, so the mark is given here; ``-m "not integration"`` then keeps the
    in-process tests (real Redis included), which run in seconds."""
    for item in items:
        if INTEGRATION_DIRS & set(item.path.parents) or item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.integration)


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
