"""Noise-aware photo denoiser: blind at the interface, conditioned on an estimated noise-level map inside.

    noisy ─┬─ NoiseLevelEstimator ── σ map (half resolution, smoothed) ──┐
           └────────────────────────────────────────────────── U-Net(noisy, σ map) ── denoised

A blind denoiser has to guess how strongly to smooth from the image alone and, trained on σ 0–55, it
over-smooths low noise (measured: below plain TV denoising at σ = 15). FFDNet shows that a denoiser given a
noise-level map handles every σ with one network; CBDNet estimates that map with a small sub-network
supervised by the true level. Both halves live in one graph, so the service still sends only the image.
The estimate is per 2×2 block, so signal-dependent (Poisson–Gaussian) noise gets a map that follows the
brightness, and a clean image gets a map near 0 — the denoiser then learns to leave it alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .unet import UNet, UNetConfig

# σ on the 0–1 scale is multiplied by this before it enters the U-Net: σ = 51/255 becomes 1.0.
NOISE_MAP_SCALE = 5.0


class NoiseLevelEstimator(nn.Module):
    """A σ map (0–1 scale) per 2×2 block: a plain CNN at half resolution, then a box filter.

    The box filter (``smooth`` blocks wide) pools the per-pixel evidence: noise level varies slowly,
    texture does not, so a wider window tells them apart better than a deeper net would at this cost.
    """

    def __init__(self, in_channels: int = 3, width: int = 32, depth: int = 4, smooth: int = 9) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.PixelUnshuffle(2), nn.Conv2d(4 * in_channels, width, 3, padding=1),
                                   nn.LeakyReLU(0.1, inplace=True)]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.1, inplace=True)]
        layers.append(nn.Conv2d(width, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)
        self.smooth = int(smooth)
        with torch.no_grad():  # start near σ ≈ 10/255 rather than at softplus(0) ≈ 0.69
            self.body[-1].bias.fill_(-3.0)

    def forward(self, x: Tensor) -> Tensor:
        s = F.softplus(self.body(x)) * 0.1  # 0.1: one unit of the last conv ≈ 25 grey levels
        if self.smooth > 1:
            s = F.avg_pool2d(s, self.smooth, stride=1, padding=self.smooth // 2, count_include_pad=False)
        return s


class NoiseAwareDenoiser(nn.Module):
    """``forward(noisy) -> denoised``; ``predict_with_sigma(noisy) -> (denoised, σ map)`` for training."""

    def __init__(self, config: UNetConfig, estimator_width: int = 32, estimator_depth: int = 4,
                 estimator_smooth: int = 9) -> None:
        super().__init__()
        if not config.unshuffle:
            raise ValueError("the noise map is given at half resolution: the U-Net needs unshuffle=True")
        config.cond_channels = 1
        self.config = config
        self.estimator = NoiseLevelEstimator(config.in_channels, estimator_width, estimator_depth, estimator_smooth)
        self.net = UNet(config)

    @property
    def multiple_of(self) -> int:
        return self.net.multiple_of

    def predict_with_sigma(self, x: Tensor, sigma: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Denoised image and the estimated σ map; ``sigma`` (half-resolution map) overrides the estimate."""
        est = self.estimator(x)
        cond = est if sigma is None else sigma
        return self.net(x, cond * NOISE_MAP_SCALE), est

    def forward_with_code(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.net.forward_with_code(x, self.estimator(x) * NOISE_MAP_SCALE)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_code(x)[0]
