"""Tiled inference for images of any size: a tile grid, a blending window, and strip-wise accumulation.

How it stays seamless and exact where it can be:
- The image is (conceptually) reflect-padded to a multiple of the model's ``multiple_of``, and every tile starts on
  a multiple of it, so a network that downsamples by that factor sees each tile exactly as it sees the whole image.
- Neighbouring tiles overlap by ``overlap`` pixels. Each tile's weight is 0 on the outer ``overlap // 4`` pixels of
  a shared border (where zero padding inside the network disturbs the output), then rises as sin² across the rest
  of the overlap; the two ramps of neighbours sum to exactly 1.
- Outputs are accumulated one row of tiles at a time into a strip ``tile_h`` rows high and handed to ``sink`` as
  soon as no later tile touches them, so working memory depends on tile size and image width, not image height.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# reader(row_indices, col_indices) -> float32 array (C_in, len(rows), len(cols))
TileReader = Callable[[np.ndarray, np.ndarray], np.ndarray]
# infer(batch float32 (N, C_in, h, w)) -> float32 (N, C_out, h, w)
BatchInfer = Callable[[np.ndarray], np.ndarray]
# sink(first_row, rows float32 (C_out, n, W)) receives finished rows in order
RowSink = Callable[[int, np.ndarray], None]


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def reflect_indices(start: int, stop: int, length: int) -> np.ndarray:
    """Indices start..stop-1 folded back into 0..length-1 by mirror reflection (no edge repeat)."""
    idx = np.arange(start, stop)
    if length == 1:
        return np.zeros_like(idx)
    period = 2 * (length - 1)
    idx = np.abs(idx) % period
    return np.where(idx >= length, period - idx, idx)


def axis_starts(length: int, tile: int, overlap: int, multiple: int) -> tuple[int, list[int]]:
    """The effective tile length and the tile starts along one axis (all on multiples of ``multiple``).

    As many tiles as ``tile`` needs, but each shrunk to the smallest size that still covers the axis with at
    least ``overlap`` between neighbours: a 1000-px side with 512-px tiles becomes three 384-px tiles instead of
    three 512-px ones, which would compute 1.8× the pixels.
    """
    padded = round_up(length, multiple)
    tile = min(round_up(tile, multiple), padded)
    if tile == padded:
        return tile, [0]
    count = -(-(padded - overlap) // max(multiple, tile - overlap))
    size = min(tile, round_up(-(-(padded + (count - 1) * overlap) // count), multiple))
    while True:  # gaps are whole multiples: grow until the widest gap still leaves ``overlap``
        units, gaps = (padded - size) // multiple, count - 1
        widest = -(-units // gaps) * multiple
        if widest <= size - overlap or size >= tile:
            break
        size += multiple
    units = (padded - size) // multiple
    starts = [round(i * units / (count - 1)) * multiple for i in range(count)]
    return size, starts


def blend_ramp(tile: int, overlap: int, ramp_start: bool, ramp_end: bool) -> np.ndarray:
    """1-D weights of one tile: ramps only on sides shared with a neighbour."""
    weights = np.ones(tile, dtype=np.float32)
    overlap = min(overlap, tile // 2)
    if overlap <= 0:
        return weights
    margin = overlap // 4
    width = overlap - 2 * margin
    i = np.arange(overlap, dtype=np.float64)
    ramp = np.clip((i - margin + 0.5) / width, 0.0, 1.0) if width > 0 else (i >= margin).astype(np.float64)
    ramp = np.sin(ramp * math.pi / 2) ** 2
    ramp[:margin] = 0.0
    ramp = ramp.astype(np.float32)
    if ramp_start:
        weights[:overlap] = ramp
    if ramp_end:
        weights[tile - overlap :] = ramp[::-1]
    return weights


@dataclass(frozen=True)
class TilePlan:
    height: int
    width: int
    tile_h: int
    tile_w: int
    ys: list[int]
    xs: list[int]
    overlap: int

    @classmethod
    def for_image(cls, height: int, width: int, tile: int, overlap: int, multiple: int) -> "TilePlan":
        tile_h, ys = axis_starts(height, tile, overlap, multiple)
        tile_w, xs = axis_starts(width, tile, overlap, multiple)
        return cls(height, width, tile_h, tile_w, ys, xs, overlap)

    @property
    def count(self) -> int:
        return len(self.ys) * len(self.xs)

    def weights(self, y: int, x: int) -> np.ndarray:
        wy = blend_ramp(self.tile_h, self.overlap, y != self.ys[0], y != self.ys[-1])
        wx = blend_ramp(self.tile_w, self.overlap, x != self.xs[0], x != self.xs[-1])
        return np.outer(wy, wx)


def run_tiled(
    plan: TilePlan,
    read: TileReader,
    infer: BatchInfer,
    sink: RowSink,
    out_channels: int,
    batch_size: int = 4,
) -> None:
    """Runs ``infer`` over every tile of ``plan`` and streams blended rows (cropped to the image) to ``sink``."""
    padded_w = plan.xs[-1] + plan.tile_w
    acc = np.zeros((out_channels, plan.tile_h, padded_w), dtype=np.float32)
    wsum = np.zeros((plan.tile_h, padded_w), dtype=np.float32)
    cols = [reflect_indices(x, x + plan.tile_w, plan.width) for x in plan.xs]

    for row, y in enumerate(plan.ys):
        rows = reflect_indices(y, y + plan.tile_h, plan.height)
        for first in range(0, len(plan.xs), batch_size):
            chunk = plan.xs[first : first + batch_size]
            batch = np.stack([read(rows, cols[first + j]) for j in range(len(chunk))]).astype(np.float32, copy=False)
            result = infer(batch)
            for j, x in enumerate(chunk):
                weight = plan.weights(y, x)
                acc[:, :, x : x + plan.tile_w] += result[j] * weight
                wsum[:, x : x + plan.tile_w] += weight

        # Rows above the next tile row are final: blend, crop to the image and hand them on.
        next_y = plan.ys[row + 1] if row + 1 < len(plan.ys) else y + plan.tile_h
        done = next_y - y
        stop = min(done, plan.height - y)
        if stop > 0:
            sink(y, acc[:, :stop, : plan.width] / np.maximum(wsum[:stop, : plan.width], 1e-12))
        # Shift what is not final yet to the top of the strip.
        keep = plan.tile_h - done
        acc[:, :keep] = acc[:, done:]
        acc[:, keep:] = 0.0
        wsum[:keep] = wsum[done:]
        wsum[keep:] = 0.0
