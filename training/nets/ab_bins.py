"""Quantised Lab ab for classification colorization (Zhang, Isola & Efros 2016, "Colorful Image Colorization").

A regression loss on ab averages the plausible colours of an ambiguous pixel (a shirt: red or blue) into their mean,
a desaturated sepia. Predicting a distribution over ab bins keeps the choices; the graph then decodes it with the
"annealed mean" (softmax of logits / T, T ≈ 0.38: between the mean, T = 1, and the mode, T → 0).

* bins: cells of ``size`` × ``size`` in the ab plane centred on multiples of ``size``, kept where an sRGB colour
  falls (261 cells of size 10 for sRGB/D65; Zhang et al.'s 313 are a convex hull of the gamut, with corners no
  photo reaches);
* soft encoding: each ground-truth ab spreads over its 5 nearest centres with Gaussian weights (σ = 5);
* rebalancing: per-class weights ∝ 1 / ((1 − λ) p̃ + λ / Q), p̃ the class frequency on the training photos
  smoothed by a Gaussian (σ = 5), normalised so that E_p̃[w] = 1: rare saturated colours are not drowned by the
  near-neutral pixels that make up most photos.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from .color import rgb_to_lab

SOFT_K = 5
SOFT_SIGMA = 5.0


@lru_cache(maxsize=4)
def _bin_cells(size: float, samples: int) -> tuple[tuple[int, int], ...]:
    v = torch.linspace(0.0, 1.0, samples, dtype=torch.float64)
    r, g, b = torch.meshgrid(v, v, v, indexing="ij")
    lab = rgb_to_lab(torch.stack([r, g, b]).reshape(1, 3, samples, samples * samples))
    cells = torch.round(lab[0, 1:].reshape(2, -1) / size).to(torch.int64).T
    return tuple(sorted(set(map(tuple, cells.tolist()))))


def ab_bin_centres(size: float = 10.0, samples: int = 64) -> Tensor:
    """(Q, 2) float32 centres (a, b) of the in-gamut ab cells, sorted by (a, b); ``samples``³ sRGB colours probe it."""
    return torch.tensor(_bin_cells(float(size), samples), dtype=torch.float32) * float(size)


def bin_lookup(centres: Tensor, size: float) -> tuple[Tensor, int]:
    """(table, offset): ``table[round(a/size) + offset, round(b/size) + offset]`` is the index of the nearest centre
    (the cell's own where it is in gamut). Nearest-bin lookups without a distance to every centre."""
    cells = torch.round(centres / size).to(torch.int64)
    offset = int(cells.abs().max()) + 2
    n = 2 * offset + 1
    grid = torch.stack(torch.meshgrid(torch.arange(n) - offset, torch.arange(n) - offset, indexing="ij"), -1)
    d2 = ((grid.view(-1, 1, 2).float() * size - centres.view(1, -1, 2)) ** 2).sum(-1)
    return d2.argmin(1).view(n, n), offset


def nearest_bin(ab: Tensor, centres: Tensor, size: float) -> Tensor:
    """(N, H, W) index of each pixel's nearest bin, for ab of shape (N, 2, H, W)."""
    table, offset = bin_lookup(centres, size)
    cell = (torch.round(ab / size).to(torch.int64) + offset).clamp(0, table.shape[0] - 1)
    return table.to(ab.device)[cell[:, 0], cell[:, 1]]


def soft_encode(ab: Tensor, centres: Tensor, k: int = SOFT_K, sigma: float = SOFT_SIGMA) -> tuple[Tensor, Tensor]:
    """(indices, weights), each (N, k, H, W): every pixel's ``k`` nearest centres and Gaussian weights summing to 1."""
    c = centres.to(ab.dtype)
    d2 = ((ab * ab).sum(1, keepdim=True) - 2 * torch.einsum("qc,nchw->nqhw", c, ab)
          + (c * c).sum(1).view(1, -1, 1, 1))
    d2, idx = torch.topk(d2, k, dim=1, largest=False)
    return idx, torch.softmax(-d2 / (2 * sigma * sigma), dim=1)


def class_prior(rgb: Tensor, centres: Tensor, size: float) -> Tensor:
    """(Q,) frequency of each bin among the pixels of ``rgb`` ((N, 3, H, W) sRGB in [0, 1])."""
    idx = nearest_bin(rgb_to_lab(rgb)[:, 1:], centres, size)
    counts = torch.bincount(idx.flatten(), minlength=centres.shape[0]).to(torch.float64)
    return counts / counts.sum().clamp(min=1.0)


def rebalance_weights(prior: Tensor, centres: Tensor, lam: float = 0.5, sigma: float = SOFT_SIGMA) -> Tensor:
    """(Q,) class weights ∝ 1 / ((1 − λ) p̃ + λ / Q), p̃ = ``prior`` smoothed over the ab plane; E_p̃[w] = 1."""
    c = centres.to(torch.float64)
    kernel = torch.exp(-torch.cdist(c, c) ** 2 / (2 * sigma * sigma))
    smooth = kernel @ prior.to(torch.float64)
    smooth = smooth / smooth.sum()
    w = 1.0 / ((1.0 - lam) * smooth + lam / c.shape[0])
    return (w / (smooth * w).sum()).to(torch.float32)


def annealed_mean(logits: Tensor, centres_kernel: Tensor, temperature: float) -> Tensor:
    """ab (N, 2, H, W) from logits (N, Q, H, W): softmax(logits / T) then a 1×1 convolution whose weights are the
    bin centres (``centres_kernel``: (2, Q, 1, 1)) — a Softmax and a Conv in ONNX."""
    return F.conv2d(torch.softmax(logits / temperature, dim=1), centres_kernel.to(logits.dtype))
