"""Small labelled PNG grids of 28×28 images (reconstructions, samples, interpolations)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

LABEL_WIDTH = 110


def _tile(images: Tensor, scale: int) -> Image.Image:
    """One row of grey-scale images ``(N, 1, H, W)`` in [0, 1], 1-pixel gaps."""
    arr = images.detach().cpu().clamp(0, 1).squeeze(1).numpy()
    n, h, w = arr.shape
    row = np.full((h, n * (w + 1) - 1), 0.35, np.float32)  # grey gaps separate black tiles
    for i, img in enumerate(arr):
        row[:, i * (w + 1) : i * (w + 1) + w] = img
    pil = Image.fromarray((row * 255).round().astype(np.uint8), mode="L")
    return pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST)


def labelled_rows(rows: Sequence[tuple[str, Tensor]], scale: int = 2, label_width: int = LABEL_WIDTH) -> Image.Image:
    """Stack rows of images, each with its label on the left."""
    tiles = [(label, _tile(images, scale)) for label, images in rows]
    width = label_width + max(t.width for _, t in tiles)
    height = sum(t.height + 4 for _, t in tiles)
    canvas = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    y = 0
    for label, tile in tiles:
        canvas.paste(tile, (label_width, y))
        if label:
            draw.text((4, y + tile.height // 2 - 6), label, fill=0, font=font)
        y += tile.height + 4
    return canvas


def grid(images: Tensor, columns: int, scale: int = 2) -> Image.Image:
    """A plain ``rows × columns`` grid (e.g. VAE samples)."""
    rows = [("", images[i : i + columns]) for i in range(0, len(images), columns)]
    return labelled_rows(rows, scale, label_width=0)


def save(image: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    return path
