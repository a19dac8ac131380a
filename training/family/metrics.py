"""Evaluation measures for the autoencoder family (all in eval mode, no parameter grads)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.nets.vae import DenseVAE
from training.objectives import Corruption, code_tensor, forward_with_code, jacobian_sq_norm_exact


@torch.no_grad()
def reconstruction_mse(model: nn.Module, clean: Tensor, inputs: Tensor | None = None) -> float:
    """Mean squared error of ``model(inputs)`` (default: ``clean``) against ``clean``."""
    model.eval()
    out = model(clean if inputs is None else inputs)
    return float((out - clean).pow(2).mean())


def mean_image_mse(train: Tensor, test: Tensor) -> float:
    """The trivial baseline: predict the training set's mean image for every test image."""
    return float((test - train.mean(dim=0, keepdim=True)).pow(2).mean())


@torch.no_grad()
def codes(model: nn.Module, x: Tensor) -> Tensor:
    model.eval()
    return code_tensor(forward_with_code(model, x)[1])


def mean_activation(model: nn.Module, x: Tensor) -> float:
    """Mean hidden activation over batch and units (ρ̂ averaged over units)."""
    return float(codes(model, x).mean())


def unit_mean_activations(model: nn.Module, x: Tensor) -> Tensor:
    """ρ̂ⱼ for each unit j, ``(D,)``."""
    return codes(model, x).mean(dim=0)


def fraction_inactive(model: nn.Module, x: Tensor, threshold: float = 1e-3) -> float:
    """Share of (sample, unit) activations below ``threshold``: how sparse the code is."""
    return float((codes(model, x).abs() < threshold).float().mean())


def jacobian_frobenius(model: nn.Module, x: Tensor) -> float:
    """Mean over samples of the encoder Jacobian's Frobenius norm ``‖∂h/∂x‖_F`` (exact)."""
    model.eval()
    with torch.enable_grad():
        xi = x.detach().requires_grad_(True)
        _, code = forward_with_code(model, xi)
        sq = jacobian_sq_norm_exact(code_tensor(code), xi, create_graph=False)
    return float(sq.sqrt().mean())


def noisy_mse(model: nn.Module, clean: Tensor, corruption: Corruption) -> float:
    """Error against the clean targets when the model sees corrupted inputs."""
    return reconstruction_mse(model, clean, corruption(clean))


@torch.no_grad()
def negative_elbo(model: DenseVAE, x: Tensor, samples: int = 4, seed: int = 0) -> float:
    """Monte-Carlo negative ELBO per sample, nats: E_q[−log p(x|z)] (Bernoulli) + KL(q ‖ p).

    Samples z with its own seeded generator, so evaluating never disturbs the global RNG.
    """
    model.eval()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    mu, logvar = model.encode(x)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)
    nll = torch.zeros_like(kl)
    for _ in range(samples):
        recon = model.decode(model.reparameterize(mu, logvar, gen)).reshape(x.shape)
        nll += F.binary_cross_entropy(recon, x, reduction="none").flatten(1).sum(dim=1)
    return float((nll / samples + kl).mean())
