"""Runs an exported ONNX model on whole images (HW or HWC float in [0, 1]), as the shipped artifact is evaluated."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def pad_to_multiple(x: np.ndarray, m: int) -> np.ndarray:
    """``x`` (H, W, C) padded by reflection at the bottom and right to multiples of ``m``, as the service tiles."""
    h, w = x.shape[:2]
    return np.pad(x, ((0, (-h) % m), (0, (-w) % m), (0, 0)), mode="reflect")


class OnnxImageModel:
    def __init__(self, path: Path, multiple_of: int, threads: int = 2) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.multiple_of = multiple_of
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """Pads by reflection to ``multiple_of`` (as the service does), runs, crops back."""
        h, w = img.shape[:2]
        x = pad_to_multiple(img if img.ndim == 3 else img[..., None], self.multiple_of)
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)
        y = self.session.run(None, {self.input_name: x})[0][0].transpose(1, 2, 0)[:h, :w]
        return y[..., 0] if y.shape[2] == 1 else y

    def seconds_per_megapixel(self, channels: int, side: int = 1024, repeats: int = 3) -> float:
        """Median wall time of a side×side image (1 MP by default) through onnxruntime."""
        x = np.random.default_rng(0).random((side, side, channels), dtype=np.float32)
        if channels == 1:
            x = x[..., 0]
        self(x)  # warm-up: memory arena and kernel selection
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            self(x)
            times.append(time.perf_counter() - t)
        return float(np.median(times)) / (side * side / 1e6)
