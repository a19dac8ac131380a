"""Guesses what an image shows, for ``--profile auto``: a document page or a photo."""

from __future__ import annotations

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # BT.601


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler–Süsstrunk colourfulness of an (H, W, 3) image on the 0–255 scale."""
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def upper_decile(values: np.ndarray) -> float:
    """``np.percentile(values, 90)`` (linear interpolation) by partial sort: the same value, without the import of
    ``numpy.ma`` that ``np.percentile`` makes on first use (a noticeable part of a one-page run's start-up)."""
    flat = values.ravel()
    position = 0.9 * (flat.size - 1)
    below = int(position)
    above = min(below + 1, flat.size - 1)
    ranked = np.partition(flat, (below, above))
    return float(ranked[below] + (ranked[above] - ranked[below]) * (position - below))


def guess_profile(pixels: np.ndarray) -> str:
    """'document' for pages (mostly bright, nearly colourless paper with a minority of ink), else 'photo'.

    Looks at a subsample of at most ~256 px on the long side, so it costs nothing next to inference.
    """
    step = max(1, max(pixels.shape[:2]) // 256)
    sample = pixels[::step, ::step].astype(np.float32)
    if pixels.dtype == np.uint16:
        sample /= 257.0
    if sample.shape[2] == 3:
        if colourfulness(sample) > 20.0:
            return "photo"
        gray = sample @ LUMA
    else:
        gray = sample[..., 0]
    paper = upper_decile(gray)
    if paper < 140.0:  # no bright background: not a page
        return "photo"
    background = float(np.mean(np.abs(gray - paper) < 0.2 * paper))
    return "document" if background > 0.5 else "photo"
