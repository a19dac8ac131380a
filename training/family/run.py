"""Train and evaluate family members; shared by the command, the demos and the tests."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from training.data.glyphs import GlyphSplit
from training.family import metrics
from training.family.fit import FitConfig, FitHistory, fit
from training.family.members import Member, make_corruption
from training.nets.vae import DenseVAE


@dataclass
class Trained:
    member: Member
    model: nn.Module
    history: FitHistory


def train_member(member: Member, train: Tensor, epochs: int, seed: int = 0, batch_size: int = 64) -> Trained:
    """Seeded end to end: weights, batch order and corruption noise."""
    torch.manual_seed(seed)
    model = member.build()
    objective = member.objective(torch.Generator().manual_seed(seed + 1))
    config = FitConfig(epochs=epochs, batch_size=batch_size, lr=member.lr, seed=seed)
    return Trained(member, model, fit(model, objective, train, config))


def evaluate(trained: Trained, split: GlyphSplit, noise: str, seed: int = 0) -> dict[str, float | None]:
    """The report's numbers for one member on the test set (``None`` where not meaningful)."""
    model, test = trained.model, split.test
    noisy = make_corruption(noise, torch.Generator().manual_seed(seed + 2))
    row: dict[str, float | None] = {
        "test_mse": metrics.reconstruction_mse(model, test),
        "noisy_test_mse": metrics.noisy_mse(model, test, noisy),
        "mean_activation": None,
        "inactive_fraction": None,
        "jacobian_frobenius": None,
        "neg_elbo": None,
        "final_train_loss": trained.history.series()[-1],
    }
    if isinstance(model, DenseVAE):
        row["neg_elbo"] = metrics.negative_elbo(model, test)
    else:
        row["mean_activation"] = metrics.mean_activation(model, test)
        row["inactive_fraction"] = metrics.fraction_inactive(model, test)
        # The exact Jacobian costs a backward pass per unit; 256 samples give a stable mean.
        row["jacobian_frobenius"] = metrics.jacobian_frobenius(model, test[:256])
    return row
