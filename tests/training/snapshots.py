"""Recorded facts of every training config, so a restructuring of training/ can prove it changed nothing.

Per config in ``training/configs/``: the loss of its objective on a fixed seeded batch, the names and shapes of
its network's parameters (the names are what warm starts from shipped ONNX files match on, see
``training/warm_start.py``) and statistics of the network's outputs on a fixed input. The batch is made here from
seeded noise, not by the data tasks, so that a change of the data generators does not move these figures.

``snapshots.json`` holds the recorded values; ``python -m tests.training.snapshots`` records them again (only
for a change that is meant to move them: a new config, an architecture change).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from training.config import CHANNELS, CONFIG_DIR, TrainConfig

SNAPSHOTS = Path(__file__).with_name("snapshots.json")
CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
SIDE = 64  # a multiple of every config's network (at most 2^4 halvings × the unshuffle: 32)

BuildNet = Callable[[TrainConfig], nn.Module]
LossOf = Callable[[TrainConfig, nn.Module, Tensor, Tensor], Tensor]


def fixed_batch(cfg: TrainConfig) -> tuple[Tensor, Tensor]:
    """(inputs, targets) of ``cfg``'s kind from seeded noise; targets carry the 4th channel the loss reads."""
    gen = torch.Generator().manual_seed(1234)
    cin, cout = CHANNELS[cfg.kind]
    x = torch.rand(2, cin, SIDE, SIDE, generator=gen)
    y = torch.rand(2, cout, SIDE, SIDE, generator=gen)
    loss = cfg.optim.loss
    if loss == "unblend_aux":  # true opacity in [0, 0.8], zero (unmarked) on about half the pixels
        opacity = torch.rand(2, 1, SIDE, SIDE, generator=gen) * 0.8
        extra = opacity * (torch.rand(2, 1, SIDE, SIDE, generator=gen) < 0.5)
    elif loss == "noise_aware":  # true noise std map
        extra = torch.rand(2, 1, SIDE, SIDE, generator=gen) * 0.2
    elif loss == "lab_ab_class":  # per-pixel class-rebalancing weight
        extra = 0.1 + 2.0 * torch.rand(2, 1, SIDE, SIDE, generator=gen)
    else:
        return x, y
    return x, torch.cat([y, extra], 1)


def _stats(t: Tensor) -> list[float]:
    t = t.detach().double()
    return [float(t.sum()), float((t * t).sum()), *[float(v) for v in t.flatten()[:: max(1, t.numel() // 5)][:5]]]


def snapshot(cfg: TrainConfig, build_net: BuildNet, loss_of: LossOf) -> dict[str, Any]:
    """The recorded facts of one config (see the module docstring)."""
    torch.manual_seed(cfg.seed)
    model = build_net(cfg)
    params = [f"{k} {tuple(v.shape)}" for k, v in model.state_dict().items()]
    x, y = fixed_batch(cfg)
    model.train()
    loss = float(loss_of(cfg, model, x, y).detach())
    out, code = model.forward_with_code(x)
    outputs = {"train": _stats(out), "code": _stats(code)}
    if cfg.net.get("out_activation") == "unblend":
        restored, logit = model.predict_opacity(x)
        outputs["opacity_restored"], outputs["opacity_logit"] = _stats(restored), _stats(logit)
    with torch.no_grad():
        model.eval()
        outputs["eval"] = _stats(model(x))
    return {"loss": loss, "parameters": len(params),
            "parameters_sha256": hashlib.sha256("\n".join(params).encode()).hexdigest(), "outputs": outputs}


def record(build_net: BuildNet, loss_of: LossOf, path: Path = SNAPSHOTS) -> dict[str, Any]:
    torch.set_num_threads(1)
    snaps = {name: snapshot(TrainConfig.load(CONFIG_DIR / f"{name}.json"), build_net, loss_of) for name in CONFIGS}
    path.write_text(json.dumps(snaps, indent=1) + "\n")
    return snaps


def current_loss(cfg: TrainConfig, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """The loss the training loops take: the config's objective on ``x -> y``."""
    from training.objectives import objective_for

    return objective_for(cfg.optim)(model, clean=y, inputs=x)[0]


if __name__ == "__main__":
    from training.builders import build_net

    for name, snap in record(build_net, current_loss).items():
        print(f"{name}: loss {snap['loss']:.6f}, {snap['parameters']} parameters")
