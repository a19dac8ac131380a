"""The autoencoder family: each member is a model factory plus an objective factory.

Hyper-parameters live here, in one place, so the command, the demos and the tests train
exactly the same members.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from training.nets.dense import DenseAutoencoder
from training.nets.vae import DenseVAE
from training.objectives import (
    Contractive,
    Corruption,
    GaussianCorruption,
    KLDivergence,
    KLSparsity,
    L1Sparsity,
    MaskingCorruption,
    Objective,
    Reconstruction,
)

CODE_DIM = 32
KL_RHO = 0.05
DENOISE_SIGMA = 0.3


@dataclass(frozen=True)
class Member:
    name: str
    summary: str
    build: Callable[[], nn.Module]
    # Gets a seeded generator so the corruption noise is reproducible.
    objective: Callable[[torch.Generator], Objective]
    # Sigmoid codes learn slowly at the ReLU models' rate; ReLU codes lose units when faster.
    lr: float = 2e-3


def make_corruption(spec: str, generator: torch.Generator | None = None) -> Corruption:
    """Parse ``"gaussian:0.3"`` (σ) or ``"masking:0.25"`` (drop probability)."""
    kind, _, value = spec.partition(":")
    if kind == "gaussian":
        return GaussianCorruption(sigma=float(value or DENOISE_SIGMA), generator=generator)
    if kind == "masking":
        return MaskingCorruption(p=float(value or 0.25), generator=generator)
    raise ValueError(f"unknown corruption {spec!r} (use gaussian:SIGMA or masking:P)")


def family(noise: str = f"gaussian:{DENOISE_SIGMA}") -> dict[str, Member]:
    """All members by name; ``noise`` configures the denoising member's corruption."""

    def relu_ae() -> nn.Module:
        return DenseAutoencoder(code_dim=CODE_DIM, hidden_activation="relu")

    def sigmoid_ae() -> nn.Module:
        return DenseAutoencoder(code_dim=CODE_DIM, hidden_activation="sigmoid")

    members = [
        Member("dense", "784→32 (ReLU)→784, MSE", relu_ae, lambda g: Objective([Reconstruction()])),
        Member(
            "dense_sigmoid",
            "784→32 (sigmoid)→784, MSE (reference for KL sparsity)",
            sigmoid_ae,
            lambda g: Objective([Reconstruction()]),
            lr=5e-3,
        ),
        Member(
            "denoising",
            f"dense, MSE of g(f(x + w)) vs x, noise {noise}",
            relu_ae,
            lambda g: Objective([Reconstruction()], corruption=make_corruption(noise, g)),
        ),
        Member(
            "sparse_l1",
            "dense, MSE + 1e-3·mean|h|",
            relu_ae,
            lambda g: Objective([Reconstruction(), L1Sparsity(weight=1e-3)]),
        ),
        Member(
            "sparse_kl",
            f"sigmoid code, MSE + 0.05·Σⱼ KL({KL_RHO}‖ρ̂ⱼ)",
            sigmoid_ae,
            lambda g: Objective([Reconstruction(), KLSparsity(rho=KL_RHO, weight=0.05)]),
            lr=5e-3,
        ),
        Member(
            "contractive",
            "dense, MSE + 1e-3·‖∂h/∂x‖²_F (exact)",
            relu_ae,
            lambda g: Objective([Reconstruction(), Contractive(weight=1e-3)]),
        ),
        Member(
            "vae",
            "784→256→(μ, log σ²)∈R⁸→256→784, Bernoulli ELBO",
            lambda: DenseVAE(hidden=256, latent_dim=8),
            lambda g: Objective([Reconstruction(loss="bce", reduction="sum"), KLDivergence()]),
        ),
    ]
    return {m.name: m for m in members}
