"""Precision variants: a model's int8 file runs on the CPU provider when IMGRESTORE_PRECISION is auto."""

import hashlib
import json
import shutil

import numpy as np
import pytest
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from services.errors import ModelChecksumError, ModelNotFoundError
from services.inference.registry import ModelRegistry


class _Batches(CalibrationDataReader):
    def __init__(self):
        rng = np.random.default_rng(0)
        self.items = iter([{"input": rng.random((1, 3, 32, 32), dtype=np.float32)} for _ in range(4)])

    def get_next(self):
        return next(self.items, None)


@pytest.fixture()
def model_dir(tiny_model_dir, tmp_path):
    folder = tmp_path / "models"
    shutil.copytree(tiny_model_dir, folder)
    quantize_static(str(folder / "watermark.onnx"), str(folder / "watermark-int8.onnx"), _Batches(),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Conv"])
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = next(m for m in manifest["models"] if m["name"] == "watermark")
    entry["variants"] = [{"precision": "int8", "file": "watermark-int8.onnx",
                          "sha256": hashlib.sha256((folder / "watermark-int8.onnx").read_bytes()).hexdigest(),
                          "providers": ["CPUExecutionProvider"]}]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_auto_runs_the_int8_variant_on_cpu_and_fp32_stays_available(model_dir):
    batch = np.random.default_rng(1).random((1, 3, 32, 32), dtype=np.float32)
    auto = ModelRegistry(model_dir, precision="auto")
    int8 = auto.load(auto.resolve("watermark"))
    assert int8.precision == "int8" and int8.qualified_name == "watermark@test+int8"
    fp32_registry = ModelRegistry(model_dir, precision="fp32")
    fp32 = fp32_registry.load(fp32_registry.resolve("watermark"))
    assert fp32.precision == "fp32" and fp32.qualified_name == "watermark@test"
    # The quantised graph really is another graph, and it stays close to the original.
    assert len(int8.session.get_inputs()) == 1
    difference = np.abs(int8.run(batch) - fp32.run(batch)).max()
    assert 0 < difference < 0.05
    # Models without a variant run their fp32 file under auto.
    assert auto.load(auto.resolve("colorize")).precision == "fp32"


def test_asking_for_a_missing_variant_or_a_corrupt_one_is_an_error(model_dir):
    with pytest.raises(ModelNotFoundError, match="no int8 variant"):
        registry = ModelRegistry(model_dir, precision="int8")
        registry.load(registry.resolve("colorize"))
    (model_dir / "watermark-int8.onnx").write_bytes(b"tampered")
    registry = ModelRegistry(model_dir, precision="auto")
    with pytest.raises(ModelChecksumError, match="watermark-int8.onnx"):
        registry.load(registry.resolve("watermark"))
