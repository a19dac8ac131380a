"""Dense bottleneck autoencoder: 784 → code (ReLU or sigmoid) → 784 (sigmoid).

One linear layer each way keeps the encoder Jacobian in closed form,
``J = diag(σ'(W x + b)) W``, so ``‖J‖²_F = Σⱼ σ'(aⱼ)² ‖Wⱼ‖²`` is exact and cheap; the
contractive objective uses it through :meth:`DenseAutoencoder.encoder_jacobian_sq_norm`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

HiddenActivation = Literal["relu", "sigmoid"]


class DenseAutoencoder(nn.Module):
    """``image → h = act(W x + b) → sigmoid(V h + c)``, output shaped like the input.

    ``hidden_activation="sigmoid"`` gives codes in (0, 1), which the KL-sparsity objective
    needs; ``"relu"`` (default) is the plain bottleneck model.
    """

    def __init__(
        self,
        image_shape: tuple[int, ...] = (1, 28, 28),
        code_dim: int = 32,
        hidden_activation: HiddenActivation = "relu",
    ) -> None:
        super().__init__()
        if hidden_activation not in ("relu", "sigmoid"):
            raise ValueError(f"unknown hidden activation {hidden_activation!r}")
        self.image_shape = tuple(image_shape)
        self.in_features = math.prod(self.image_shape)
        self.code_dim = code_dim
        self.hidden_activation: HiddenActivation = hidden_activation
        self.encoder = nn.Linear(self.in_features, code_dim)
        self.decoder = nn.Linear(code_dim, self.in_features)

    def _flat(self, x: Tensor) -> Tensor:
        if x[0].numel() != self.in_features:
            raise ValueError(f"expected {self.in_features} values per sample, got shape {tuple(x.shape)}")
        return x.reshape(x.shape[0], self.in_features)

    def _act(self, a: Tensor) -> Tensor:
        return torch.relu(a) if self.hidden_activation == "relu" else torch.sigmoid(a)

    def encode(self, x: Tensor) -> Tensor:
        """Code ``h``, shape ``(N, code_dim)``."""
        return self._act(self.encoder(self._flat(x)))

    def decode(self, h: Tensor) -> Tensor:
        """Images in [0, 1], shape ``(N, *image_shape)``."""
        return torch.sigmoid(self.decoder(h)).reshape(h.shape[0], *self.image_shape)

    def forward_with_code(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.encode(x)
        return self.decode(h).reshape(x.shape), h

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_code(x)[0]

    def encoder_jacobian_sq_norm(self, x: Tensor) -> Tensor:
        """Exact ``Σⱼ ‖∇ₓ hⱼ‖²`` per sample, ``(N,)``; differentiable w.r.t. the weights."""
        a = self.encoder(self._flat(x))
        if self.hidden_activation == "relu":
            slope_sq = (a > 0).to(a.dtype)  # ReLU' ∈ {0, 1}, so its square is itself
        else:
            s = torch.sigmoid(a)
            slope_sq = (s * (1 - s)).pow(2)
        row_sq = self.encoder.weight.pow(2).sum(dim=1)  # ‖Wⱼ‖², one per hidden unit
        return slope_sq @ row_sq
