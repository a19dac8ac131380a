"""28×28 grey-scale glyph images for the autoencoder family, built offline.

Two sources, both shipped inside installed packages (nothing is downloaded):

* ``digits``: scikit-learn's 1,797 hand-written 8×8 digits, scaled to a 20×20 box and
  padded to 28×28 (the MNIST layout);
* ``fonts``: letters and digits rendered with the TrueType fonts matplotlib ships (DejaVu,
  Computer Modern), each drawn a few times with a small random rotation, scale and shift.

Images are ``float32`` tensors ``(N, 1, 28, 28)`` in [0, 1], ink bright on a dark background.
The set and the train/test split depend only on ``seed``.
"""

from __future__ import annotations

import functools
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

Source = Literal["digits", "fonts", "both"]

SIZE = 28
BOX = 20  # glyphs fit a 20×20 box centred in 28×28, as in MNIST
DEFAULT_CHARS = string.digits + string.ascii_uppercase + string.ascii_lowercase
DEFAULT_FONTS: tuple[str, ...] = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "cmr10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
)


@dataclass(frozen=True)
class GlyphSplit:
    """A deterministic train/test split of glyph images."""

    train: Tensor
    test: Tensor


def digits_28() -> Tensor:
    """scikit-learn's digits as ``(1797, 1, 28, 28)`` images in [0, 1]."""
    from sklearn.datasets import load_digits  # ships its data; imported lazily as it is slow

    raw = torch.from_numpy(load_digits().images.astype(np.float32) / 16.0).unsqueeze(1)
    scaled = F.interpolate(raw, size=(BOX, BOX), mode="bilinear", align_corners=False)
    pad = (SIZE - BOX) // 2
    return F.pad(scaled, (pad, pad, pad, pad)).clamp(0.0, 1.0)


def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _render(char: str, font_path: Path, rng: np.random.Generator, jitter: bool) -> np.ndarray:
    """One glyph, rendered large then fitted into the 20×20 box with optional jitter."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(font_path), 64)
    canvas = Image.new("L", (128, 128), 0)
    ImageDraw.Draw(canvas).text((32, 16), char, fill=255, font=font)
    if jitter:
        canvas = canvas.rotate(float(rng.uniform(-12, 12)), resample=Image.Resampling.BILINEAR, center=(64, 64))
    bbox = canvas.getbbox()
    if bbox is None:  # a font without this glyph renders nothing
        return np.zeros((SIZE, SIZE), np.float32)
    glyph = canvas.crop(bbox)
    scale = BOX / max(glyph.size) * (float(rng.uniform(0.75, 1.0)) if jitter else 1.0)
    w, h = max(1, round(glyph.size[0] * scale)), max(1, round(glyph.size[1] * scale))
    glyph = glyph.resize((w, h), Image.Resampling.LANCZOS)
    shift = rng.integers(-2, 3, size=2) if jitter else np.zeros(2, int)
    x0 = int(np.clip((SIZE - w) // 2 + shift[0], 0, SIZE - w))
    y0 = int(np.clip((SIZE - h) // 2 + shift[1], 0, SIZE - h))
    out = Image.new("L", (SIZE, SIZE), 0)
    out.paste(glyph, (x0, y0))
    return np.asarray(out, np.float32) / 255.0


def font_glyphs(
    chars: str = DEFAULT_CHARS,
    fonts: tuple[str, ...] = DEFAULT_FONTS,
    variants: int = 2,
    seed: int = 0,
) -> Tensor:
    """Each char in each font, drawn once plain and ``variants − 1`` times jittered."""
    rng = np.random.default_rng(seed)
    font_dir = _font_dir()
    images = [_render(c, font_dir / name, rng, jitter=v > 0) for name in fonts for c in chars for v in range(variants)]
    stack = torch.from_numpy(np.stack(images)).unsqueeze(1)
    return stack[stack.flatten(1).amax(dim=1) > 0]  # drop glyphs a font lacks


@functools.lru_cache(maxsize=4)
def _images(source: Source, seed: int) -> Tensor:
    if source == "digits":
        return digits_28()
    if source == "fonts":
        return font_glyphs(seed=seed)
    if source == "both":
        return torch.cat([digits_28(), font_glyphs(seed=seed)])
    raise ValueError(f"unknown source {source!r}")


def load_glyphs(
    source: Source = "both",
    test_fraction: float = 0.2,
    seed: int = 0,
    max_train: int | None = None,
    max_test: int | None = None,
) -> GlyphSplit:
    """Shuffle the chosen source with ``seed`` and split it; ``max_*`` cap each part (fast tests)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    images = _images(source, seed)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    n_test = max(1, round(len(images) * test_fraction))
    test, train = images[order[:n_test]], images[order[n_test:]]
    # Copies, so callers can't corrupt the cache.
    return GlyphSplit(train=train[:max_train].clone(), test=test[:max_test].clone())
