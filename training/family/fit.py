"""A minimal, seeded training loop for the in-memory autoencoder family."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from training.objectives import Objective


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0


@dataclass
class FitHistory:
    """Mean of each objective part per epoch (``"total"`` included)."""

    epochs: list[dict[str, float]] = field(default_factory=list)

    def series(self, part: str = "total") -> list[float]:
        return [e[part] for e in self.epochs]


def fit(model: nn.Module, objective: Objective, train: Tensor, config: FitConfig = FitConfig()) -> FitHistory:
    """Adam on shuffled minibatches of ``train`` (clean images; corruption is the objective's)."""
    order_rng = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    history = FitHistory()
    model.train()
    for _ in range(config.epochs):
        sums: dict[str, float] = {}
        n_batches = 0
        for idx in torch.randperm(len(train), generator=order_rng).split(config.batch_size):
            loss, parts = objective(model, train[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + float(value)
            n_batches += 1
        history.epochs.append({name: total / n_batches for name, total in sums.items()})
    model.eval()
    return history
