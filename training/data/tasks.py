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

from ..config import CHANNELS
from ..nets.ab_bins import ab_bin_centres, class_prior, nearest_bin, rebalance_weights
from ..nets.color import rgb_to_lab
from .degrade import DirtOptions, corrupt_page, light_dirt
from .fonts import FontFamily, training_fonts
from .noise import random_noise, random_noise_with_level
from .pages import binarize, render_page, render_scan_page
from .watermarks import add_watermark, add_watermark_in_view


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


def render_scan_pages(seed: int, n: int, fonts: list[FontFamily], kinds: dict[str, float], binary_fraction: float,
                      width: int = 800, height: int = 1000) -> tuple[list[np.ndarray], list[bool]]:
    """``n`` clean pages of the page kinds in ``kinds`` (:data:`pages.SCAN_KINDS` -> share), a ``binary_fraction``
    of them thresholded; uint8 (a quarter of float32's memory, and what a scan holds), and which are binary."""
    rng = np.random.default_rng([seed, 0xD0C, 2])  # not render_pages' stream
    names = sorted(kinds)
    p = np.array([kinds[k] for k in names], np.float64)
    pages, binary = [], []
    for _ in range(n):
        page = render_scan_page(rng, fonts, names[int(rng.choice(len(names), p=p / p.sum()))], width, height)
        is_binary = bool(rng.random() < binary_fraction)
        if is_binary:
            page = binarize(page, float(rng.uniform(0.4, 0.6)))  # the threshold sets how heavy the strokes come out
        pages.append(np.round(page * 255.0).astype(np.uint8))
        binary.append(is_binary)
    return pages, binary


@dataclass
class DocDenoiseTask:
    """Random crops of synthetic pages, corrupted per crop (dirty gray in, clean gray out).

    The real-scan mix (doc-denoise-v3) is on when ``page_kinds`` is set: the page pool mixes the kinds of
    :func:`pages.render_scan_page` (heavy, typed, large headings, colour luma), ``binary_fraction`` of the pages
    already binary; each crop is then given as it is (``clean_fraction``: input == target, the network must
    return it untouched), with faint dirt only (``light_fraction``: :func:`degrade.light_dirt`), or fully
    corrupted with the extra dirt of ``dirt`` (:class:`degrade.DirtOptions` fields). With the defaults the
    batches are exactly those of the older configs.
    """

    seed: int = 0
    crop: int = 160
    batch_size: int = 12
    pages: int = 48
    fonts: list[FontFamily] = field(default_factory=training_fonts)
    page_kinds: dict[str, float] | None = None
    binary_fraction: float = 0.0
    clean_fraction: float = 0.0
    light_fraction: float = 0.0
    dirt: dict[str, float] | None = None
    in_channels: int = CHANNELS["doc-denoise"].inputs
    out_channels: int = CHANNELS["doc-denoise"].outputs

    def __post_init__(self) -> None:
        if self.page_kinds is None:
            self._pages: list[np.ndarray] = render_pages(self.seed, self.pages, self.fonts)
            self._binary = [False] * self.pages
        else:
            self._pages, self._binary = render_scan_pages(self.seed, self.pages, self.fonts, self.page_kinds,
                                                          self.binary_fraction)
        self._dirt = DirtOptions(**self.dirt) if self.dirt is not None else None

    def _crop(self, rng: np.random.Generator, page: np.ndarray) -> np.ndarray:
        h, w = page.shape
        mid = 128 if page.dtype == np.uint8 else 0.5
        for _ in range(4):  # prefer crops with some ink: blank paper teaches little
            y, x = int(rng.integers(0, h - self.crop + 1)), int(rng.integers(0, w - self.crop + 1))
            c = page[y:y + self.crop, x:x + self.crop]
            if (c < mid).mean() > 0.01:
                break
        return c.astype(np.float32) / 255.0 if c.dtype == np.uint8 else c

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        rng = _rng(self.seed, step)
        xs, ys = [], []
        for _ in range(self.batch_size):
            i, j = rng.integers(len(self._pages), size=2)
            clean = self._crop(rng, self._pages[i])
            other = self._crop(rng, self._pages[j])
            if self.page_kinds is None and self._dirt is None and not (self.clean_fraction or self.light_fraction):
                xs.append(corrupt_page(rng, clean, other))  # the original mix, draw for draw
            else:
                r = rng.random()
                if r < self.clean_fraction:
                    xs.append(clean.copy())
                elif r < self.clean_fraction + self.light_fraction:
                    xs.append(light_dirt(rng, clean))
                else:
                    xs.append(corrupt_page(rng, clean, other, self._dirt))
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
    # Noise-aware models: targets carry the true noise std map as a 4th channel, and the noise mix of
    # noise.random_noise_with_level (clean inputs, more low σ, gray patches) is used.
    with_level: bool = False
    in_channels: int = CHANNELS["photo-denoise"].inputs
    out_channels: int = CHANNELS["photo-denoise"].outputs

    def __post_init__(self) -> None:
        self._sampler = TexturedPhotoSampler(self.photos) if self.texture_weighting else None

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        rng = _rng(self.seed, step)
        xs, ys = [], []
        for _ in range(self.batch_size):
            clean = photo_crop(rng, self.photos, self._sampler, self.crop)
            if self.with_level:
                clean, noisy, level = random_noise_with_level(rng, clean, self.sigma_max)
                xs.append(noisy)
                ys.append(np.concatenate([clean, level[..., None]], -1))
            else:
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
    # Fraction of patches left unmarked (input == target): most images a remover sees in a backfill carry no
    # mark, and a model that only ever saw marked patches finds marks everywhere (clean photos came back at 30 dB).
    clean_fraction: float = 0.0
    # > 0: marks are laid out on a whole image of up to this many px a side and the patch is a window of it
    # (watermarks.add_watermark_in_view), so logos and text come at the scale a tile of a real image sees them.
    mark_canvas: int = 0
    fonts: list[FontFamily] = field(default_factory=training_fonts)
    in_channels: int = CHANNELS["watermark"].inputs
    out_channels: int = CHANNELS["watermark"].outputs

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
            if self.clean_fraction and rng.random() < self.clean_fraction:
                marked, alpha = clean, np.zeros(clean.shape[:2], np.float32)
            elif self.mark_canvas:
                marked, alpha = add_watermark_in_view(rng, clean, self.fonts, self.mark_canvas)
            else:
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
    # rebalance = λ > 0 (class-head colorizers; objectives.AbClassCrossEntropy): a 4th target channel carries each pixel's
    # class-rebalancing weight (nets/ab_bins.rebalance_weights; the prior p̃ is measured on these photos).
    rebalance: float = 0.0
    bin_size: float = 10.0
    in_channels: int = CHANNELS["colorize"].inputs
    out_channels: int = CHANNELS["colorize"].outputs

    def __post_init__(self) -> None:
        self._sampler = TexturedPhotoSampler(self.photos) if self.texture_weighting else None
        self._class_weights: Tensor | None = None
        if self.rebalance > 0:
            self._centres = ab_bin_centres(self.bin_size)
            prior = photo_class_prior(self.photos, self._centres, self.bin_size)
            self._class_weights = rebalance_weights(prior, self._centres, self.rebalance)

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        rng = _rng(self.seed, step)
        y = _to_tensor([photo_crop(rng, self.photos, self._sampler, self.crop, 3.0) for _ in range(self.batch_size)])
        x = (y * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        if self._class_weights is not None:
            idx = nearest_bin(rgb_to_lab(y)[:, 1:], self._centres, self.bin_size)
            y = torch.cat([y, self._class_weights[idx].unsqueeze(1)], 1)
        return x, y


def photo_class_prior(photos: list[np.ndarray], centres: Tensor, size: float, stride: int = 4) -> Tensor:
    """(Q,) frequency of each ab bin over the pixels of ``photos`` (uint8 RGB; every ``stride``-th row/column)."""
    counts = torch.zeros(centres.shape[0], dtype=torch.float64)
    for photo in photos:
        rgb = torch.from_numpy(np.ascontiguousarray(photo[::stride, ::stride], dtype=np.float32) / 255.0)
        rgb = rgb.permute(2, 0, 1)[None]
        counts += class_prior(rgb, centres, size) * (rgb.shape[2] * rgb.shape[3])
    return counts / counts.sum()


def photo_cache_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "runs" / "cache"
