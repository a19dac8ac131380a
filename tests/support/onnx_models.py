"""Real, small ONNX models built with onnx.helper for the service tests (no torch needed).

Each is a genuine conv encoder–decoder: conv → ReLU → (stride-2 conv → ReLU → nearest 2× upsample) → conv →
sigmoid, with fixed seeded weights. Not trained, but exactly the kind of graph the service runs in production.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _conv(name: str, x: str, cin: int, cout: int, rng: np.random.Generator, stride: int = 1, k: int = 3):
    weight = (rng.standard_normal((cout, cin, k, k)) * (1.0 / np.sqrt(cin * k * k))).astype(np.float32)
    bias = (rng.standard_normal(cout) * 0.05).astype(np.float32)
    inits = [numpy_helper.from_array(weight, f"{name}.w"), numpy_helper.from_array(bias, f"{name}.b")]
    node = helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [name], pads=[k // 2] * 4,
                            strides=[stride, stride], kernel_shape=[k, k])
    return node, inits


def build_model(cin: int, cout: int, *, width: int = 8, downsample: bool = True, seed: int = 0,
                residual: bool = True) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    n, i = _conv("c1", "input", cin, width, rng)
    nodes += [n, helper.make_node("Relu", ["c1"], ["r1"])]
    inits += i
    last = "r1"
    if downsample:
        n, i = _conv("down", last, width, width, rng, stride=2)
        inits += i
        scales = numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "scales")
        inits.append(scales)
        nodes += [n, helper.make_node("Relu", ["down"], ["rd"]),
                  helper.make_node("Resize", ["rd", "", "scales"], ["up"], mode="nearest"),
                  helper.make_node("Add", ["up", last], ["skip"])]
        last = "skip"
    n, i = _conv("c2", last, width, cout, rng)
    nodes.append(n)
    inits += i
    if residual and cin == cout:  # output = sigmoid(logit(input) + small correction): close to the input
        eps = numpy_helper.from_array(np.array(1e-3, dtype=np.float32), "eps")
        one = numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one")
        tenth = numpy_helper.from_array(np.array(0.1, dtype=np.float32), "tenth")
        inits += [eps, one, tenth]
        nodes += [
            helper.make_node("Clip", ["input", "eps", ""], ["xc"]),
            helper.make_node("Sub", ["one", "xc"], ["omx"]),
            helper.make_node("Div", ["xc", "omx"], ["odds"]),
            helper.make_node("Log", ["odds"], ["logit"]),
            helper.make_node("Mul", ["c2", "tenth"], ["corr"]),
            helper.make_node("Add", ["logit", "corr"], ["pre"]),
        ]
        last = "pre"
    else:
        last = "c2"
    nodes.append(helper.make_node("Sigmoid", [last], ["output"]))
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", cin, "H", "W"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", cout, "H", "W"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


# name, task, profile, in channels, out channels
TINY_MODELS = [
    ("doc-denoise", "denoise", "document", 1, 1),
    ("photo-denoise", "denoise", "photo", 3, 3),
    ("colorize", "colorize", None, 1, 3),
    ("watermark", "watermark", None, 3, 3),
]


def write_model_dir(folder: Path, tile_size: int = 64, overlap: int = 16) -> Path:
    """Writes the four tiny models and a manifest.json into ``folder``; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for seed, (name, task, profile, cin, cout) in enumerate(TINY_MODELS):
        data = build_model(cin, cout, seed=seed).SerializeToString()
        (folder / f"{name}.onnx").write_bytes(data)
        space = {1: "gray", 3: "rgb"}
        entries.append({
            "name": name, "version": "test", "task": task, "profile": profile, "file": f"{name}.onnx",
            "sha256": hashlib.sha256(data).hexdigest(),
            "input": {"name": "input", "channels": cin, "color_space": space[cin], "value_range": [0, 1]},
            "output": {"name": "output", "channels": cout, "color_space": space[cout], "value_range": [0, 1]},
            "tiling": {"tile_size": tile_size, "overlap": overlap, "multiple_of": 2},
        })
    (folder / "manifest.json").write_text(json.dumps({"schema_version": 1, "models": entries}, indent=2))
    return folder
