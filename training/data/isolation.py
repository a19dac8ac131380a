"""Checks that no training source is (a copy of) an evaluation image, cheaply enough for CI.

* every training file's sha256 differs from every evaluation file's;
* any training image whose aspect ratio is within 3% of an evaluation image's (a copy, re-encoded or
  resized, keeps its aspect ratio) is decoded to a 32×32 gray thumbnail and must not correlate above 0.9
  with that evaluation image's thumbnail.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

THUMB = 32
MAX_CORRELATION = 0.9
ASPECT_TOLERANCE = 0.03


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def thumbnail(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        im.draft("L", (THUMB * 4, THUMB * 4))
        t = np.asarray(im.convert("L").resize((THUMB, THUMB), Image.Resampling.BILINEAR), np.float64)
    t = t - t.mean()
    return t / (np.linalg.norm(t) + 1e-9)


def _aspect(path: Path) -> float:
    with Image.open(path) as im:
        w, h = im.size
    return w / h


@dataclass
class Leak:
    training_file: Path
    eval_name: str
    reason: str


def find_leaks(training_files: list[Path], eval_files: dict[str, Path]) -> list[Leak]:
    eval_sha = {file_sha256(p): n for n, p in eval_files.items()}
    eval_aspect = {n: _aspect(p) for n, p in eval_files.items()}
    eval_thumbs: dict[str, np.ndarray] = {}
    leaks = []
    for path in training_files:
        sha = file_sha256(path)
        if sha in eval_sha:
            leaks.append(Leak(path, eval_sha[sha], "identical file"))
            continue
        try:
            aspect = _aspect(path)
        except OSError:
            continue
        for name, ea in eval_aspect.items():
            if abs(aspect / ea - 1) <= ASPECT_TOLERANCE:
                if name not in eval_thumbs:
                    eval_thumbs[name] = thumbnail(eval_files[name])
                corr = float((thumbnail(path) * eval_thumbs[name]).sum())
                if corr > MAX_CORRELATION:
                    leaks.append(Leak(path, name, f"thumbnail correlation {corr:.3f}"))
    return leaks
