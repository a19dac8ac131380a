"""Runs one model over one decoded image: channel adaptation, tiles → ONNX Runtime session → blended output."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import InferenceError
from .content import LUMA
from .registry import LoadedModel
from .tiling import TilePlan, round_up, run_tiled


@dataclass(frozen=True)
class TileSettings:
    tile_size: int
    overlap: int
    batch_size: int


@dataclass
class InferenceOutput:
    pixels: np.ndarray  # uint8 or uint16 (H, W, C)
    tiles: int


def output_channels(model: LoadedModel, input_channels: int, keeps_gray: bool) -> int:
    """Gray stays gray for models that only restore (a colour model runs on replicated gray); colorize adds colour."""
    produced = model.spec.output.channels
    return 1 if keeps_gray and input_channels == 1 else produced


def run_model(
    model: LoadedModel,
    pixels: np.ndarray,
    tiles: TileSettings,
    keeps_gray: bool = True,
    before_batch: Callable[[], None] | None = None,
) -> InferenceOutput:
    """``before_batch`` runs before every tile batch (the job's time limit: it raises to stop)."""
    spec = model.spec
    height, width, channels = pixels.shape
    in_scale = 65535.0 if pixels.dtype == np.uint16 else 255.0
    in_lo, in_hi = spec.input.value_range
    out_lo, out_hi = spec.output.value_range
    want_in = spec.input.channels
    produced = spec.output.channels
    final = output_channels(model, channels, keeps_gray)
    # 16-bit precision is kept only where the result stays gray (see imaging's 16-bit rule).
    out_dtype = np.uint16 if pixels.dtype == np.uint16 and final == 1 else np.uint8
    out_max = float(np.iinfo(out_dtype).max)
    out = np.empty((height, width, final), dtype=out_dtype)

    def read(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        tile = pixels[np.ix_(rows, cols)].astype(np.float32) / in_scale
        if want_in == 1 and channels == 3:
            tile = (tile @ LUMA)[..., None]
        elif want_in == 3 and channels == 1:
            tile = np.repeat(tile, 3, axis=2)
        tile = tile * (in_hi - in_lo) + in_lo
        return tile.transpose(2, 0, 1)

    def infer(batch: np.ndarray) -> np.ndarray:
        if before_batch is not None:
            before_batch()
        try:
            result = model.run(np.ascontiguousarray(batch, dtype=np.float32))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InferenceError(f"{spec.qualified_name} failed on a {batch.shape} batch: {exc}") from exc
        if result.shape[1] != produced or result.shape[2:] != batch.shape[2:]:
            raise InferenceError(
                f"{spec.qualified_name} returned shape {result.shape} for input {batch.shape}; "
                f"the manifest promises {produced} channels at the input's size"
            )
        return result

    def sink(first_row: int, rows: np.ndarray) -> None:
        values = np.clip((rows - out_lo) / (out_hi - out_lo), 0.0, 1.0)
        if final == 1 and produced == 3:
            values = np.tensordot(LUMA, values, axes=1)[None]
        n = values.shape[1]
        out[first_row : first_row + n] = np.round(values * out_max).astype(out_dtype).transpose(1, 2, 0)

    size = tiles.tile_size
    plan = TilePlan.for_image(height, width, size, min(tiles.overlap, size // 2), spec.tiling.multiple_of)
    run_tiled(plan, read, infer, sink, out_channels=produced, batch_size=tiles.batch_size)
    return InferenceOutput(out, plan.count)


def run_largest_tile_batch(model: LoadedModel, tiles: TileSettings) -> tuple[int, ...]:
    """Runs the largest tile batch that ``tiles`` can feed ``model``, once, and returns its shape.

    ONNX Runtime keeps the memory that the largest input so far needed: without this, a worker's memory grows job by
    job as images of new sizes arrive (tiles shrink to small images), and a limit is met mid-job instead of at load.
    """
    side = round_up(tiles.tile_size, model.spec.tiling.multiple_of)
    shape = (tiles.batch_size, model.spec.input.channels, side, side)
    model.run(np.zeros(shape, dtype=np.float32))
    return shape
