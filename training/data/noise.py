"""Photo noise models for a blind denoiser: Gaussian, Poisson–Gaussian (signal-dependent) and JPEG-compressed."""

from __future__ import annotations

import cv2
import numpy as np


def add_gaussian(rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
    """``sigma`` on the 0–255 scale; clipped to [0, 1] because every real 8-bit input is."""
    return np.clip(img + (sigma / 255.0) * rng.standard_normal(img.shape).astype(np.float32), 0.0, 1.0)


def add_poisson_gaussian(rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
    """Shot noise whose std is ``sigma`` at mid-gray, plus a read-noise floor (camera-like)."""
    a = (sigma / 255.0) ** 2 / 0.5 * rng.uniform(0.5, 1.0)  # variance per unit intensity
    b = max(0.0, (sigma / 255.0) ** 2 - 0.5 * a)
    std = np.sqrt(a * np.clip(img, 0, 1) + b)
    return np.clip(img + std * rng.standard_normal(img.shape).astype(np.float32), 0.0, 1.0)


def jpeg_rgb(img: np.ndarray, quality: int) -> np.ndarray:
    u8 = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", u8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0


def random_noise(rng: np.random.Generator, img: np.ndarray, sigma_max: float = 55.0) -> np.ndarray:
    """One blind-denoising training input: σ uniform in [0, sigma_max], noise type drawn at random."""
    sigma = float(rng.uniform(0.0, sigma_max))
    r = rng.random()
    if r < 0.7:
        out = add_gaussian(rng, img, sigma)
    elif r < 0.9:
        out = add_poisson_gaussian(rng, img, sigma)
    else:  # noisy then JPEG-compressed, as phone pictures are
        out = jpeg_rgb(add_gaussian(rng, img, sigma * 0.6), int(rng.integers(40, 95)))
    return out
