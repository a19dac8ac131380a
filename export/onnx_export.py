"""Torch → ONNX: opset 17, input ``input`` / output ``output``, dynamic batch, height and width."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"


def export_onnx(model: nn.Module, in_channels: int, path: Path, multiple_of: int) -> onnx.ModelProto:
    """Exports ``model`` (eval mode, float32) and returns the checked ONNX model written to ``path``."""
    model = model.eval().float()
    side = 4 * multiple_of
    example = torch.rand(2, in_channels, side, side)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript exporter traces a fully convolutional graph with symbolic H/W directly; its
        # output is a plain, optimisable graph with no shape guards for the multiple-of constraint.
        torch.onnx.export(
            model, (example,), buf, dynamo=False, opset_version=OPSET,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                          OUTPUT_NAME: {0: "batch", 2: "height", 3: "width"}},
            do_constant_folding=True,
        )
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return proto


def describe_io(proto: onnx.ModelProto) -> dict[str, object]:
    """Names, element types and dims of the graph's inputs/outputs (dims: int or symbolic name)."""

    def dims(vi: onnx.ValueInfoProto) -> list[object]:
        return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]

    return {
        "opset": max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        "inputs": [(i.name, i.type.tensor_type.elem_type, dims(i)) for i in proto.graph.input],
        "outputs": [(o.name, o.type.tensor_type.elem_type, dims(o)) for o in proto.graph.output],
    }
