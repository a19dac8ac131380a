"""Demo inputs for the service README, made by the training generators from non-evaluation sources.

* ``documents/dirty-page-{1,2}.png``: synthetic pages (training fonts, their own seed), corrupted;
* ``photos/noisy-motorcycle.jpg``: scikit-image's ``motorcycle_left`` with Gaussian noise σ=25;
* ``photos/gray-grace-hopper.jpg``: matplotlib's ``grace_hopper`` sample as BT.601 luma (for colorize).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from .data.degrade import corrupt_page
from .data.fonts import training_fonts
from .data.noise import add_gaussian
from .data.pages import render_page

SAMPLE_SEED = 314159


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)


def _photo(path: Path, max_side: int) -> np.ndarray:
    im = Image.open(path).convert("RGB")
    scale = max_side / max(im.size)
    if scale < 1:
        im = im.resize((round(im.size[0] * scale), round(im.size[1] * scale)), Image.Resampling.LANCZOS)
    return np.asarray(im, np.float32) / 255.0


def write_samples(out: Path) -> list[Path]:
    import matplotlib
    import skimage

    rng = np.random.default_rng(SAMPLE_SEED)
    fonts = training_fonts()
    written = []
    (out / "documents").mkdir(parents=True, exist_ok=True)
    (out / "photos").mkdir(parents=True, exist_ok=True)
    pages = [render_page(rng, fonts, 800, 1000) for _ in range(2)]
    for i, page in enumerate(pages):
        # Pixel noise does not compress: redraw the dirt (deterministically) until the PNG is small
        # enough for the repository yet clearly dirty.
        for _ in range(100):
            dirty = corrupt_page(rng, page, pages[1 - i])
            img = Image.fromarray(_u8(np.round(dirty * 63) / 63))  # 64 gray levels: invisible, compresses
            buf = io.BytesIO()
            img.save(buf, format="PNG", optimize=True)
            if buf.tell() < 290_000 and float(np.sqrt(np.mean((dirty - page) ** 2))) > 0.12:
                break
        path = out / "documents" / f"dirty-page-{i + 1}.png"
        path.write_bytes(buf.getvalue())
        written.append(path)
    moto = _photo(Path(skimage.__file__).parent / "data" / "motorcycle_left.png", 640)
    path = out / "photos" / "noisy-motorcycle.jpg"
    Image.fromarray(_u8(add_gaussian(rng, moto, 25.0))).save(path, quality=90)
    written.append(path)
    hopper = _photo(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg", 512)
    gray = hopper @ np.array([0.299, 0.587, 0.114], np.float32)
    path = out / "photos" / "gray-grace-hopper.jpg"
    Image.fromarray(_u8(gray), mode="L").save(path, quality=92)
    written.append(path)
    return written
