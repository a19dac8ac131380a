"""One optimisation step, the same in the step-budget loop (``train.py``) and the time-budget legs (``legs.py``)."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from .objectives import Objective


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, objective: Objective, x: Tensor, y: Tensor,
                   lr: float, grad_clip: float, autocast: contextlib.AbstractContextManager | None = None) -> Tensor:
    """Sets the step's LR, takes the objective's loss of ``x -> y`` (under ``autocast`` if given: the legs' bf16),
    back-propagates it in fp32, clips the gradient norm to ``grad_clip`` (0: no clipping) and updates the
    weights. Returns the loss, detached."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with autocast or contextlib.nullcontext():
        loss, _ = objective(model, clean=y, inputs=x)
    optimizer.zero_grad(set_to_none=True)
    loss.float().backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.detach()
