"""The models shipped in services/models: manifest valid, files match their sha256, contract holds."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from export.parity import session
from services.inference.registry import Manifest

MODELS = Path(__file__).resolve().parents[2] / "services" / "models"
pytestmark = pytest.mark.skipif(not (MODELS / "manifest.json").is_file(), reason="no shipped models yet")


def test_manifest_and_files():
    manifest = Manifest.model_validate(json.loads((MODELS / "manifest.json").read_text()))
    assert manifest.models
    for spec in manifest.models:
        data = (MODELS / spec.file).read_bytes()
        assert hashlib.sha256(data).hexdigest() == spec.sha256
        assert len(data) <= 10 * 1024 * 1024


def test_doc_denoise_is_shipped_and_runs():
    raw = json.loads((MODELS / "manifest.json").read_text())
    spec = next(m for m in raw["models"] if m["name"] == "doc-denoise")
    assert (spec["task"], spec["profile"]) == ("denoise", "document")
    m = spec["tiling"]["multiple_of"]
    x = np.random.default_rng(0).random((1, 1, 4 * m, 6 * m), dtype=np.float32)
    y = session(MODELS / spec["file"]).run(None, {"input": x})[0]
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
