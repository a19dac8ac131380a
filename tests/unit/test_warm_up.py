"""A worker warms each model with the largest tile batch a job can feed it, so its memory is flat from then on."""

from __future__ import annotations

import numpy as np
import pytest

from services.config import Settings
from services.inference.registry import ModelRegistry
from services.inference.runner import run_model
from services.restorer import Restorer


class ShapeLog:
    """Wraps a loaded model's ``run`` and records the input shapes it was given."""

    def __init__(self, model) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self._run = model.run
        model.run = self

    def __call__(self, batch):
        self.shapes.append(batch.shape)
        return self._run(batch)


@pytest.mark.parametrize("tile_size", [64, 70])  # 70: not a multiple of the model's, tiles round up
def test_warm_up_runs_the_largest_batch_that_any_image_feeds(tiny_model_dir, tile_size):
    settings = Settings(model_dir=tiny_model_dir, tile_size=tile_size, tile_batch_size=3)
    restorer = Restorer(settings, registry=ModelRegistry(tiny_model_dir, intra_op_threads=1))
    model = restorer.registry.load(restorer.registry.resolve("watermark"))
    log = ShapeLog(model)

    restorer.warm_up(model)
    warm = log.shapes[-1]
    rng = np.random.default_rng(0)
    for height, width in [(8, 8), (50, 333), (tile_size * 3 + 5, tile_size * 2 - 3), (1000, 17), (400, 400),
                          (2 * tile_size - 16, 3 * tile_size - 32)]:  # rows of three whole tiles (overlap 16)
        run_model(model, rng.integers(0, 256, (height, width, 3), dtype=np.uint8), restorer.tiling_for(model))

    fed = log.shapes[1:]
    assert max(np.prod(s) for s in fed) == np.prod(warm)  # the three-tile rows reach it: nothing larger comes
    assert all(s[0] <= warm[0] and s[2] <= warm[2] and s[3] <= warm[3] for s in fed)


def test_a_failing_warm_up_does_not_fail_the_load(tiny_model_dir):
    restorer = Restorer(Settings(model_dir=tiny_model_dir), registry=ModelRegistry(tiny_model_dir))
    model = restorer.registry.load(restorer.registry.resolve("watermark"))

    def broken(batch):
        raise MemoryError("no room for the warm-up batch")

    model.run = broken
    restorer.warm_up(model)  # logged, not raised: the job that loaded the model goes on
