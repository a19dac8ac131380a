"""Warm starts: weights of another network copied into a model by parameter name.

The source is a shipped ONNX file (its initializers carry the PyTorch parameter names: a training leg starts
from the promoted weights) or a finished run's state dict (a config whose ``init_from`` names a parent run with
a smaller head). The matching parameters are copied — by name, with or without a wrapper's prefix — and the rest
start fresh.

A convolution that grew (an input layer that gained channels, or a wider network: more channels in and out) is
*adapted* so that the new network first computes exactly what the old one did: the old weights fill the leading
block, the weights from new input channels into old output channels are zero, and the new output channels keep
their fresh initialisation. The old channels then never see the new ones until training moves those zeros, while
the new channels compute from the start and pass gradient to the zeros that read them (all-zero new channels
would get no gradient at all).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


def onnx_weights(path: Path) -> dict[str, np.ndarray]:
    """The initializers of an ONNX file, by name."""
    import onnx
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def _input_dims(model: nn.Module) -> dict[str, int]:
    """The input-channel dimension of every convolution weight, by parameter name (a transposed convolution stores
    its weight as in × out × kh × kw)."""
    dims: dict[str, int] = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and module.groups == 1:
            dims[f"{name}.weight" if name else "weight"] = 0 if isinstance(module, nn.ConvTranspose2d) else 1
    return dims


def _embed(target: torch.Tensor, src: torch.Tensor, in_dim: int | None) -> bool:
    """Writes ``src`` into the leading block of ``target`` (a layer that grew) and zeroes the weights from new
    input channels into old output channels; False where ``src`` does not fit inside ``target``."""
    if src.ndim != target.ndim or any(s > t for s, t in zip(src.shape, target.shape)):
        return False
    if src.ndim > 1 and in_dim is None:  # not a convolution: no rule says which new entries must be zero
        return False
    if src.shape[2:] != target.shape[2:]:  # another kernel size: the old filter is not its corner
        return False
    if src.ndim > 1:
        out_dim = 1 - in_dim
        old_out = [slice(None)] * target.ndim
        old_out[out_dim] = slice(0, src.shape[out_dim])
        target[tuple(old_out)] = 0.0
    target[tuple(slice(0, n) for n in src.shape)] = src
    return True


def load_promoted(model: nn.Module, weights: dict[str, np.ndarray]) -> dict[str, list[str]]:
    """Copies ``weights`` into ``model`` (see the module docstring); returns what was copied, adapted, left new."""
    report: dict[str, list[str]] = {"copied": [], "adapted": [], "new": []}
    state = model.state_dict()
    input_dims = _input_dims(model)
    for key, target in state.items():
        source = weights.get(key)
        if source is None and "." in key:
            source = weights.get(key.split(".", 1)[1])  # "net.head.0.weight" in a wrapper of the shipped U-Net
        if source is None:
            report["new"].append(key)
            continue
        src = torch.from_numpy(np.array(source)).to(target.dtype)
        if src.shape == target.shape:
            target.copy_(src)
            report["copied"].append(key)
        elif _embed(target, src, input_dims.get(key)):
            report["adapted"].append(key)
        else:
            report["new"].append(key)
    model.load_state_dict(state)
    if not (report["copied"] or report["adapted"]):
        raise ValueError("none of the promoted weights fit this network: is it the same model?")
    return report
