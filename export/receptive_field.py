"""Effective receptive field: how far from an output pixel the inputs still matter.

The theoretical receptive field of a U-Net is far larger than what its output depends on in practice; tiles
overlap by the radius that holds almost all of the gradient of a centre pixel with respect to the input.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn


def _unclamped(model: nn.Module) -> nn.Module:
    # A saturated output (e.g. white paper clipped at 1) has zero gradient: measure before the clamp.
    model = copy.deepcopy(model)
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and getattr(cfg, "out_activation", None) == "clamp":
            cfg.out_activation = "none"
    return model


def effective_radius(model: nn.Module, in_channels: int, size: int = 192, mass: float = 0.99,
                     samples: int = 4, seed: int = 0) -> int:
    """Smallest Chebyshev radius around the centre holding ``mass`` of the centre output's |∂y/∂x|."""
    gen = torch.Generator().manual_seed(seed)
    model = _unclamped(model).eval()
    acc = torch.zeros(size, size)
    for _ in range(samples):
        x = (0.35 + 0.3 * torch.rand(1, in_channels, size, size, generator=gen)).requires_grad_(True)
        y = model(x)
        y[0, :, size // 2, size // 2].sum().backward()
        acc += x.grad.abs().sum((0, 1))
    g = acc.numpy()
    total = g.sum()
    if total <= 0:
        return 0
    c = size // 2
    yy, xx = np.mgrid[0:size, 0:size]
    cheb = np.maximum(np.abs(yy - c), np.abs(xx - c))
    per_radius = np.bincount(cheb.ravel(), weights=g.ravel())
    cum = np.cumsum(per_radius) / total
    return int(np.searchsorted(cum, mass))
