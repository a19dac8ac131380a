"""The held-out evaluation sets, generated deterministically and never used for training.

* documents: pages rendered with the evaluation fonts (FreeFont, Noto; disjoint from training) and seed
  ``DOC_SEED``, corrupted by the same generator as training;
* photos: scikit-learn's china/flower, scikit-image's astronaut/coffee/chelsea/rocket, cropped to a multiple
  of 16 — noisy versions at fixed σ, watermarked versions (evaluation fonts) with their true masks, and
  luma for colorization.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data.degrade import corrupt_page
from .data.fonts import eval_fonts
from .data.noise import add_gaussian
from .data.pages import render_page
from .data.sources import load_eval_photos
from .data.watermarks import add_watermark

DOC_SEED = 20261126
PHOTO_SEED = 4242
WATERMARK_SEED = 777
CROP_MULTIPLE = 16


@dataclass
class EvalPage:
    clean: np.ndarray
    dirty: np.ndarray
    text: str


def eval_pages(n: int = 4, width: int = 800, height: int = 1008) -> list[EvalPage]:
    rng = np.random.default_rng(DOC_SEED)
    fonts = eval_fonts()
    pages = []
    others = []
    for _ in range(n):
        lines: list[str] = []
        clean = render_page(rng, fonts, width, height, text=lines)
        pages.append((clean, "\n".join(lines)))
        others.append(clean)
    out = []
    for i, (clean, text) in enumerate(pages):
        # Guarantee every eval page carries real dirt (the training sampler may draw clean-ish crops).
        dirty = corrupt_page(rng, clean, others[(i + 1) % n])
        out.append(EvalPage(clean, dirty, text))
    return out


def _crop(img: np.ndarray) -> np.ndarray:
    h = img.shape[0] // CROP_MULTIPLE * CROP_MULTIPLE
    w = img.shape[1] // CROP_MULTIPLE * CROP_MULTIPLE
    return img[:h, :w]


def eval_photos() -> dict[str, np.ndarray]:
    """name -> float32 RGB in [0, 1], cropped to a multiple of 16."""
    return {k: _crop(v).astype(np.float32) / 255.0 for k, v in sorted(load_eval_photos().items())}


def noisy_photos(sigma: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (clean, noisy) with Gaussian σ (0–255 scale), clipped, fixed seed per (image, σ)."""
    out = {}
    for i, (name, clean) in enumerate(eval_photos().items()):
        rng = np.random.default_rng([PHOTO_SEED, i, int(sigma)])
        out[name] = (clean, add_gaussian(rng, clean, sigma))
    return out


def watermarked_photos() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """name -> (clean, marked, true mask as bool) — watermarks drawn with the evaluation fonts."""
    fonts = eval_fonts()
    out = {}
    for i, (name, clean) in enumerate(eval_photos().items()):
        rng = np.random.default_rng([WATERMARK_SEED, i])
        marked, alpha = add_watermark(rng, clean, fonts)
        out[name] = (clean, marked, alpha > 0.02)
    return out


def luma601(rgb: np.ndarray) -> np.ndarray:
    return (rgb @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.float32)
