"""Warm starts: weights of another network copied into a model by parameter name.

The source is a shipped ONNX file (its initializers carry the PyTorch parameter names: a training leg starts
from the promoted weights) or a finished run's state dict (a config whose ``init_from`` names a parent run with
a smaller head). The matching parameters are copied — by name, with or without a wrapper's prefix; an input
layer that gained channels gets the old weights for the old channels and zeros for the new ones — and the rest
start fresh.
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


def load_promoted(model: nn.Module, weights: dict[str, np.ndarray]) -> dict[str, list[str]]:
    """Copies ``weights`` into ``model`` (see the module docstring); returns what was copied, adapted, left new."""
    report: dict[str, list[str]] = {"copied": [], "adapted": [], "new": []}
    state = model.state_dict()
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
        elif src.ndim == 4 and src.shape[0] == target.shape[0] and src.shape[1] < target.shape[1] \
                and src.shape[2:] == target.shape[2:]:
            target.zero_()
            target[:, : src.shape[1]] = src
            report["adapted"].append(key)
        else:
            report["new"].append(key)
    model.load_state_dict(state)
    if not report["copied"]:
        raise ValueError("none of the promoted weights fit this network: is it the same model?")
    return report
