"""Shared pieces of the quality evaluation: timing, the baseline cache, number formatting."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parents[1] / "results"


class BaselineCache:
    """PSNRs of the deterministic baselines on the fixed eval inputs, kept between runs (CBM3D takes minutes).

    Keyed by condition, image and method; one file per model's evaluation, discarded as a whole when that
    evaluation's ``VERSION`` changes (the inputs may have changed with it).
    """

    def __init__(self, path: Path | None, version: int) -> None:
        self.path = path  # None: in memory only (quick runs never touch the committed cache)
        self.version = version
        raw = json.loads(path.read_text()) if path is not None and path.is_file() else {}
        self.entries: dict[str, float] = raw.get("psnr", {}) if raw.get("eval_version") == version else {}
        self.dirty = False

    def psnr(self, key: str, compute: Callable[[], float]) -> float:
        if key not in self.entries:
            self.entries[key] = round(float(compute()), 4)
            self.dirty = True
        return self.entries[key]

    def save(self) -> None:
        if self.dirty and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"eval_version": self.version, "psnr": dict(sorted(self.entries.items()))},
                                            indent=1, ensure_ascii=False) + "\n")
            self.dirty = False


class Timed:
    """Runs a method over images, accumulating output, seconds and megapixels."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.mpix: dict[str, float] = {}

    def __call__(self, label: str, fn: Callable[[], np.ndarray], pixels: int) -> np.ndarray:
        t = time.perf_counter()
        out = fn()
        self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - t
        self.mpix[label] = self.mpix.get(label, 0.0) + pixels / 1e6
        return out

    def s_per_mp(self) -> dict[str, float]:
        return {k: round(self.seconds[k] / self.mpix[k], 3) for k in self.seconds}


def fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) and abs(v) < 1 else (f"{v:.2f}" if isinstance(v, float) else str(v))
