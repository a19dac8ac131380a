"""Batch makers, one per production model: ``task.batch(step) -> (inputs, targets)`` as NCHW float32 tensors.

Every batch is a pure function of (seed, step), so a resumed run sees exactly the batches an uninterrupted
one would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from .degrade import corrupt_page
from .fonts import FontFamily, training_fonts
from .noise import random_noise
from .pages import render_page
from .watermarks import add_watermark


def _rng(seed: int, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, step])


def random_photo_crop(rng: np.random.Generator, img: np.ndarray, crop: int, max_zoom_out: float = 2.0) -> np.ndarray:
    """A crop x crop float32 patch: random scale (area-downsampled), position, flips and 90° rotation."""
    h, w = img.shape[:2]
    zoom = rng.uniform(1.0, min(max_zoom_out, min(h, w) / crop))
    side = int(crop * zoom)
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    patch = img[y:y + side, x:x + side]
    if side != crop:
        patch = cv2.resize(patch, (crop, crop), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    patch = np.rot90(patch, int(rng.integers(4)))
    return np.ascontiguousarray(patch, dtype=np.float32) / 255.0


def detail(img: np.ndarray) -> float:
    """Mean |Laplacian| of the luma in [0, 1] units: ~0.002 for a smooth gradient, 0.03–0.16 for real photos."""
    g = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    if g.max() > 1.5:
        g = g / 255.0
    return float(np.abs(cv2.Laplacian(g, cv2.CV_32F)).mean())


class TexturedPhotoSampler:
    """Draws photo patches biased towards texture.

    Many offline sources are smooth wallpapers; trained on them uniformly, a blind denoiser learns to blur
    everything (measured: worse than the noisy input at σ=15 on the eval photos). Images are drawn with
    probability ∝ their detail (clipped to [0.005, 0.08]) and a patch is kept with probability
    min(1, detail / patch_detail) (up to 5 tries), so flat patches still appear, just rarely.
    """

    def __init__(self, photos: list[np.ndarray], patch_detail: float = 0.03) -> None:
        self.photos = photos
        w = np.clip([detail(p[::2, ::2]) for p in photos], 0.005, 0.08)
        self.p = w / w.sum()
        self.patch_detail = patch_detail

    def crop(self, rng: np.random.Generator, crop: int, max_zoom_out: float = 2.0) -> np.ndarray:
        patch = None
        for _ in range(5):
            img = self.photos[int(rng.choice(len(self.photos), p=self.p))]
            patch = random_photo_crop(rng, img, crop, max_zoom_out)
            if rng.random() < detail(patch) / self.patch_detail:
                break
        return patch


def _to_tensor(batch: list[np.ndarray]) -> Tensor:
    arr = np.stack(batch)
    if arr.ndim == 3:
        arr = arr[:, None]
    else:
        arr = arr.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


def render_pages(seed: int, n: int, fonts: list[FontFamily], width: int = 800, height: int = 1000) -> list[np.ndarray]:
    rng = np.random.default_rng([seed, 0xD0C])
    return [render_page(rng, fonts, width, height) for _ in range(n)]


@dataclass
class DocDenoiseTask:
    """Random crops of synthetic pages, corrupted per crop (dirty gray in, clean gray out)."""

    seed: int = 0
    crop: int = 160
    batch_size: int = 12
    pages: int = 48
    fonts: list[FontFamily] = field(default_factory=training_fonts)
    in_channels: int = 1
    out_channels: int = 1

    def __post_init__(self) -> None:
        self._pages = render_pages(self.seed, self.pages, self.fonts)

    def _crop(self, rng: np.random.Generator, page: np.ndarray) -> np.ndarray:
        h, w = page.shape
        for _ in range(4):  # prefer crops with some ink: blank paper teaches little
            y, x = int(rng.integers(0, h - self.crop + 1)), int(rng.integers(0, w - self.crop + 1))
            c = page[y:y + self.crop, x:x + self.crop]
            if (c < 0.5).mean() > 0.01:
                break
        return c

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        rng = _rng(self.seed, step)
        xs, ys = [], []
        for _ in range(self.batch_size):
            i, j = rng.integers(len(self._pages), size=2)
            clean = self._crop(rng, self._pages[i])
            other = self._crop(rng, self._pages[j])
            xs.append(corrupt_page(rng, clean, other))
            ys.append(clean)
        return _to_tensor(xs), _to_tensor(ys)


def photo_crop(rng: np.random.Generator, photos: list[np.ndarray], sampler: TexturedPhotoSampler | None,
               crop: int, max_zoom_out: float = 2.0) -> np.ndarray:
    """One training patch: from the texture-weighted sampler when there is one, else from a random photo."""
    if sampler is not None:
        return sampler.crop(rng, crop, max_zoom_out)
    return random_photo_crop(rng, photos[int(rng.integers(len(photos)))], crop, max_zoom_out)


@dataclass
class PhotoDenoiseTask:
    """Clean photo patches with blind noise (Gaussian / Poisson–Gaussian / JPEG, σ 0–sigma_max)."""

    photos: list[np.ndarray]
    seed: int = 0
    crop: int = 96
    batch_size: int = 16
    sigma_max: float = 55.0
    texture_weighting: bool = False
    in_channels: int = 3
    out_channels: int = 3

    def __post_init__(self) -> None:
        self._sampler = TexturedPhotoSampler(self.photos) if self.texture_weighting else None

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        rng = _rng(self.seed, step)
        xs, ys = [], []
        for _ in range(self.batch_size):
            clean = photo_crop(rng, self.photos, self._sampler, self.crop)
            xs.append(random_noise(rng, clean, self.sigma_max))
            ys.append(clean)
        return _to_tensor(xs), _to_tensor(ys)


@dataclass
class WatermarkTask:
    """Photo (and some document) patches with a synthetic visible watermark; the clean patch is the target."""

    photos: list[np.ndarray]
    seed: int = 0
    crop: int = 160
    batch_size: int = 12
    document_fraction: float = 0.2
    pages: int = 16
    # Append the true opacity as a 4th target channel (for the unblend head's auxiliary loss).
    with_alpha: bool = False
    fonts: list[FontFamily] = field(default_factory=training_fonts)
    in_channels: int = 3
    out_channels: int = 3

    def __post_init__(self) -> None:
        self._pages = render_pages(self.seed + 1, self.pages, self.fonts) if self.document_fraction > 0 else []

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        rng = _rng(self.seed, step)
        xs, ys = [], []
        for _ in range(self.batch_size):
            if self._pages and rng.random() < self.document_fraction:
                page = self._pages[int(rng.integers(len(self._pages)))]
                h, w = page.shape
                y, x = int(rng.integers(0, h - self.crop + 1)), int(rng.integers(0, w - self.crop + 1))
                tint = rng.uniform(0.85, 1.0, 3).astype(np.float32)
                clean = page[y:y + self.crop, x:x + self.crop, None] * tint
            else:
                clean = photo_crop(rng, self.photos, None, self.crop, 3.0)
            marked, alpha = add_watermark(rng, clean, self.fonts)
            xs.append(marked)
            ys.append(np.concatenate([clean, alpha[..., None]], -1) if self.with_alpha else clean)
        return _to_tensor(xs), _to_tensor(ys)


@dataclass
class ColorizeTask:
    """BT.601 luma of a photo patch in, the colour patch out (the loss picks the space)."""

    photos: list[np.ndarray]
    seed: int = 0
    crop: int = 128
    batch_size: int = 16
    texture_weighting: bool = False
    in_channels: int = 1
    out_channels: int = 3

    def __post_init__(self) -> None:
        self._sampler = TexturedPhotoSampler(self.photos) if self.texture_weighting else None

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        rng = _rng(self.seed, step)
        y = _to_tensor([photo_crop(rng, self.photos, self._sampler, self.crop, 3.0) for _ in range(self.batch_size)])
        x = (y * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        return x, y


def photo_cache_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "runs" / "cache"
