"""Photo noise models for a blind denoiser: Gaussian, Poisson–Gaussian (signal-dependent) and JPEG-compressed."""

from __future__ import annotations

import cv2
import numpy as np


def add_gaussian(rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
    """``sigma`` on the 0–255 scale; clipped to [0, 1] because every real 8-bit input is."""
    return np.clip(img + (sigma / 255.0) * rng.standard_normal(img.shape).astype(np.float32), 0.0, 1.0)


def add_poisson_gaussian(rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
    """Shot noise whose std is ``sigma`` at mid-gray, plus a read-noise floor (camera-like)."""
    return poisson_gaussian_with_level(rng, img, sigma)[0]


def poisson_gaussian_with_level(rng: np.random.Generator, img: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, per-pixel std on the 0–1 scale) for :func:`add_poisson_gaussian`."""
    a = (sigma / 255.0) ** 2 / 0.5 * rng.uniform(0.5, 1.0)  # variance per unit intensity
    b = max(0.0, (sigma / 255.0) ** 2 - 0.5 * a)
    std = np.sqrt(a * np.clip(img, 0, 1) + b).astype(np.float32)
    return np.clip(img + std * rng.standard_normal(img.shape).astype(np.float32), 0.0, 1.0), std


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


def luma_gray(img: np.ndarray) -> np.ndarray:
    """An RGB patch turned into a gray one (BT.601 luma in all three channels), as scanned B/W photos are."""
    g = img @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat(g[..., None], 3, axis=2).astype(np.float32)


def random_noise_with_level(rng: np.random.Generator, img: np.ndarray, sigma_max: float = 55.0,
                            clean_fraction: float = 0.08, low_fraction: float = 0.4, low_max: float = 15.0,
                            gray_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clean target, noisy input, true noise std per pixel on the 0–1 scale, HW) for a noise-aware denoiser.

    Compared with :func:`random_noise`: some inputs are clean (the denoiser must return them untouched),
    low σ is drawn more often (real photos are mostly lightly noisy, and that is where a blind net
    over-smooths), and some patches are gray with the same noise in every channel (scanned B/W prints).
    """
    if rng.random() < gray_fraction:
        img = luma_gray(img)
        gray = True
    else:
        gray = False
    h, w = img.shape[:2]
    if rng.random() < clean_fraction:
        return img, img.copy(), np.zeros((h, w), np.float32)
    sigma = float(rng.uniform(0.0, low_max if rng.random() < low_fraction else sigma_max))
    r = rng.random()
    if gray:  # one noise field, copied to the three channels
        noisy = add_gaussian(rng, img[..., :1], sigma)
        return img, np.repeat(noisy, 3, axis=2), np.full((h, w), sigma / 255.0, np.float32)
    if r < 0.7:
        return img, add_gaussian(rng, img, sigma), np.full((h, w), sigma / 255.0, np.float32)
    if r < 0.9:
        noisy, std = poisson_gaussian_with_level(rng, img, sigma)
        return img, noisy, std.mean(axis=2)
    # Noisy then JPEG-compressed, as phone pictures are; the level is that of the noise before compression.
    noisy = jpeg_rgb(add_gaussian(rng, img, sigma * 0.6), int(rng.integers(40, 95)))
    return img, noisy, np.full((h, w), sigma * 0.6 / 255.0, np.float32)
