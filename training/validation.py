"""Validation during training: fixed batches from far beyond the training stream, and their PSNR."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

VAL_STEPS = tuple(10**9 + k for k in range(4))  # batches the training stream never reaches


def validation_batches(task: Any, device: torch.device | None = None) -> list[tuple[Tensor, Tensor]]:
    """The task's batches at :data:`VAL_STEPS` (a pure function of the task's seed), on ``device``."""
    batches = [task.batch(s) for s in VAL_STEPS]
    if device is None:
        return batches
    return [(x.to(device), y.to(device)) for x, y in batches]


@torch.no_grad()
def validation_psnr(model: nn.Module, batches: list[tuple[Tensor, Tensor]]) -> float:
    model.eval()
    mse = []
    for x, y in batches:
        out = model(x).clamp(0, 1)
        mse.append(F.mse_loss(out, y[:, : out.shape[1]]).item())  # targets may carry extra channels
    model.train()
    return float(10 * math.log10(1.0 / max(1e-12, sum(mse) / len(mse))))
