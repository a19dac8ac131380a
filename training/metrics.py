"""Image-quality metrics on float images in [0, 1]: RMSE, PSNR, SSIM, colourfulness, character error rate."""

from __future__ import annotations

import re

import numpy as np


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(20 * np.log10(1.0 / max(rmse(a, b), 1e-10)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    if a.ndim == 3:
        return float(structural_similarity(a, b, data_range=1.0, channel_axis=2))
    return float(structural_similarity(a, b, data_range=1.0))


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Süsstrunk (2003) M = σ_rgyb + 0.3 μ_rgyb, on the 0–255 scale."""
    x = rgb.astype(np.float64) * 255.0
    rg = x[..., 0] - x[..., 1]
    yb = 0.5 * (x[..., 0] + x[..., 1]) - x[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def normalise_text(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance, one vectorised DP row per character of ``a``."""
    if not a:
        return len(b)
    if not b:
        return len(a)
    bb = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    idx = np.arange(len(b) + 1)
    prev = idx.astype(np.int64)
    for i, ch in enumerate(a, start=1):
        cost = (bb != ord(ch)).astype(np.int64)
        t = np.empty_like(prev)
        t[0] = i
        t[1:] = np.minimum(prev[1:] + 1, prev[:-1] + cost)
        # Insertions chain along the row: row[j] = min_k (t[k] + j - k), a running minimum.
        prev = np.minimum.accumulate(t - idx) + idx
    return int(prev[-1])


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate in percent (edit distance / reference length), whitespace normalised."""
    ref, hyp = normalise_text(reference), normalise_text(hypothesis)
    return 100.0 * edit_distance(ref, hyp) / max(1, len(ref))
