"""PyTorch vs ONNX Runtime parity on random and real inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

TOLERANCE = 1e-4


@dataclass
class ParityReport:
    max_abs_error: float
    cases: list[tuple[str, tuple[int, ...], float]]

    @property
    def ok(self) -> bool:
        return self.max_abs_error <= TOLERANCE


class ParityError(AssertionError):
    pass


def session(path: Path, threads: int = 0) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # as the service runs it
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def random_inputs(in_channels: int, multiple_of: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Uniform noise and a smooth random field, at non-square sizes and batch 1 and 3."""
    rng = np.random.default_rng(seed)
    m = multiple_of
    shapes = [(1, in_channels, 4 * m, 6 * m), (3, in_channels, 8 * m, 5 * m)]
    out = []
    for s in shapes:
        out.append((f"uniform{s}", rng.random(s, dtype=np.float32)))
        smooth = np.cumsum(rng.standard_normal(s).astype(np.float32), axis=3)
        smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min() + 1e-6)
        out.append((f"smooth{s}", smooth.astype(np.float32)))
    return out


def check_parity(model: nn.Module, onnx_path: Path, inputs: list[tuple[str, np.ndarray]],
                 tolerance: float = TOLERANCE) -> ParityReport:
    """Runs every input through both; raises :class:`ParityError` when any max abs error exceeds ``tolerance``."""
    sess = session(onnx_path)
    name = sess.get_inputs()[0].name
    model = model.eval()
    cases = []
    for label, x in inputs:
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = sess.run(None, {name: x})[0]
        if got.shape != ref.shape:
            raise ParityError(f"{onnx_path.name} {label}: ONNX shape {got.shape} != torch {ref.shape}")
        cases.append((label, tuple(x.shape), float(np.abs(got - ref).max())))
    report = ParityReport(max(c[2] for c in cases), cases)
    if report.max_abs_error > tolerance:
        worst = max(cases, key=lambda c: c[2])
        raise ParityError(f"{onnx_path.name}: max abs error {worst[2]:.2e} on {worst[0]} exceeds {tolerance:.0e}")
    return report
