"""Dense variational autoencoder with a Gaussian posterior and a Bernoulli-style decoder."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn


def _standard_normal(shape: tuple[int, ...] | torch.Size, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """N(0, I) noise on ``like``'s device and dtype; a generator on another device still seeds it."""
    device = like.device if generator is None else generator.device
    return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


class GaussianCode(NamedTuple):
    """The VAE's code: the sample used for decoding and the posterior's parameters."""

    z: Tensor
    mu: Tensor
    logvar: Tensor


class DenseVAE(nn.Module):
    """``x → (μ, log σ²) → z = μ + σ·ε → sigmoid decoder``.

    In training mode ``z`` is a reparameterised sample (gradients flow to μ and σ); in eval
    mode ``z = μ`` so reconstructions are deterministic.
    """

    def __init__(
        self,
        image_shape: tuple[int, ...] = (1, 28, 28),
        hidden: int = 256,
        latent_dim: int = 8,
        logvar_limit: float = 10.0,
    ) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.in_features = math.prod(self.image_shape)
        self.latent_dim = latent_dim
        # Clamping log σ² keeps exp() finite early in training, when the encoder is random.
        self.logvar_limit = logvar_limit
        self.body = nn.Sequential(nn.Linear(self.in_features, hidden), nn.ReLU())
        self.to_mu = nn.Linear(hidden, latent_dim)
        self.to_logvar = nn.Linear(hidden, latent_dim)
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, self.in_features))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior parameters ``(μ, log σ²)``, each ``(N, latent_dim)``."""
        feats = self.body(x.reshape(x.shape[0], self.in_features))
        logvar = self.to_logvar(feats).clamp(-self.logvar_limit, self.logvar_limit)
        return self.to_mu(feats), logvar

    @staticmethod
    def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return mu + _standard_normal(mu.shape, mu, generator) * torch.exp(0.5 * logvar)

    def decode(self, z: Tensor) -> Tensor:
        """Images in [0, 1], ``(N, *image_shape)``."""
        return torch.sigmoid(self.decoder(z)).reshape(z.shape[0], *self.image_shape)

    def forward_with_code(self, x: Tensor) -> tuple[Tensor, GaussianCode]:
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar) if self.training else mu
        return self.decode(z).reshape(x.shape), GaussianCode(z, mu, logvar)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_code(x)[0]

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` new images decoded from the prior ``z ~ N(0, I)``."""
        like = next(self.parameters())
        return self.decode(_standard_normal((n, self.latent_dim), like, generator))

    @torch.no_grad()
    def interpolate(self, x_a: Tensor, x_b: Tensor, steps: int = 8) -> Tensor:
        """Decode ``steps`` evenly spaced points on the line between the posterior means.

        ``x_a``/``x_b`` are single images (with or without a batch dimension); the first and
        last outputs are the (mean) reconstructions of ``x_a`` and ``x_b``.
        """
        if steps < 2:
            raise ValueError("steps must be >= 2")
        mu_a, _ = self.encode(x_a.reshape(1, self.in_features))
        mu_b, _ = self.encode(x_b.reshape(1, self.in_features))
        t = torch.linspace(0.0, 1.0, steps, device=mu_a.device, dtype=mu_a.dtype).unsqueeze(1)
        return self.decode((1 - t) * mu_a + t * mu_b)
