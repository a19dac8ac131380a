"""Export of every production architecture: ONNX contract, parity ≤ 1e-4, manifest valid for the service."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export.manifest import read_manifest
from export.onnx_export import describe_io
from export.parity import ParityError, check_parity, random_inputs, session
from export.pipeline import export_model
from services.inference.registry import Manifest
from training.builders import build_net
from training.config import CHANNELS, CONFIG_DIR, MODEL_NAMES, TrainConfig


def _blob(cfg: TrainConfig) -> dict:
    return {"config": cfg.to_dict(), "steps": 0, "wall_seconds": 0.0, "command": "test", "val_psnr": None}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    models = {}
    for name in MODEL_NAMES:
        cfg = TrainConfig.load(CONFIG_DIR / f"{name}.json")
        model = build_net(cfg).eval()
        export_model(name, model, _blob(cfg), out, out / "no-quality.json", "test")
        models[name] = model
    return out, models


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_onnx_contract(exported, name: str):
    out, models = exported
    path = out / f"{name}.onnx"
    assert path.stat().st_size <= 10 * 1024 * 1024
    io = describe_io(onnx.load(str(path)))
    assert io["opset"] >= 17
    (in_name, in_type, in_dims), = io["inputs"]
    (out_name, out_type, out_dims), = io["outputs"]
    assert (in_name, out_name) == ("input", "output")
    assert in_type == out_type == onnx.TensorProto.FLOAT
    assert isinstance(in_dims[0], str) and isinstance(in_dims[2], str) and isinstance(in_dims[3], str)
    assert (in_dims[1], out_dims[1]) == CHANNELS[name]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parity_random_and_real(exported, name: str):
    out, models = exported
    model = models[name]
    rng = np.random.default_rng(1)
    m = model.multiple_of
    real = [("photo-like", np.clip(rng.normal(0.5, 0.2, (1, CHANNELS[name].inputs, 7 * m, 3 * m)), 0, 1).astype(np.float32))]
    report = check_parity(model, out / f"{name}.onnx", random_inputs(CHANNELS[name].inputs, m, seed=3) + real)
    assert report.ok and report.max_abs_error <= 1e-4 and len(report.cases) == 5


def test_unblend_watermark_head_exports_with_parity(tmp_path: Path):
    cfg = TrainConfig.load(CONFIG_DIR / "watermark.json")
    cfg.net["out_activation"] = "unblend"
    model = build_net(cfg).eval()
    export_model("watermark", model, _blob(cfg), tmp_path, tmp_path / "none.json", "test")
    x = np.random.default_rng(0).random((1, 3, 64, 48), dtype=np.float32)
    report = check_parity(model, tmp_path / "watermark.onnx", [("rand", x)])
    assert report.ok
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy()
    assert np.abs(y - x).max() < 0.05  # starts close to "no watermark": opacity ≈ 0.015


def test_parity_check_detects_a_wrong_model(exported):
    out, models = exported
    other = build_net(TrainConfig.load(CONFIG_DIR / "doc-denoise.json")).eval()
    torch.nn.init.constant_(other.tail.bias, 0.3)  # a different function than the exported one
    with pytest.raises(ParityError):
        check_parity(other, out / "doc-denoise.onnx", random_inputs(1, other.multiple_of))


def test_manifest_validates_with_the_service_schema(exported):
    out, _ = exported
    raw = read_manifest(out / "manifest.json")
    manifest = Manifest.model_validate(raw)
    assert [m.name for m in manifest.models] == list(MODEL_NAMES)
    for spec, entry in zip(manifest.models, raw["models"]):
        assert spec.sha256 == __import__("hashlib").sha256((out / spec.file).read_bytes()).hexdigest()
        assert spec.tiling.overlap >= entry["receptive_field_radius"] or spec.tiling.overlap == spec.tiling.tile_size // 2 - spec.tiling.multiple_of
        assert spec.tiling.tile_size % spec.tiling.multiple_of == 0
        for key in ("architecture", "parameters", "gflop_per_megapixel", "training", "metrics"):
            assert key in entry
        assert {"data", "command", "seed", "steps", "wall_time_s"} <= set(entry["training"])


def test_dynamic_shapes_run(exported):
    out, models = exported
    sess = session(out / "photo-denoise.onnx")
    m = models["photo-denoise"].multiple_of
    for shape in [(1, 3, m, m), (2, 3, 3 * m, 11 * m)]:
        y = sess.run(None, {"input": np.random.default_rng(0).random(shape, dtype=np.float32)})[0]
        assert y.shape == shape and 0 <= y.min() and y.max() <= 1
