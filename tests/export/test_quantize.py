"""export.quantize: the int8 variant and its fallback, on the shipped doc-denoise graph with small calibration crops."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import onnx
import pytest
import torch

from export import quantize
from export.quantize import input_convolution, quantize_one

MODELS = Path(__file__).resolve().parents[2] / "services" / "models"
REPO = MODELS.parents[1]


class _Crops:
    """Stands in for the training task: seeded gray crops (the calibration only needs inputs)."""

    def batch(self, step: int) -> tuple[torch.Tensor, None]:
        return torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(step)), None


@pytest.fixture()
def doc_model(tmp_path, monkeypatch) -> tuple[dict, Path]:
    entry = next(m for m in json.loads((MODELS / "manifest.json").read_text())["models"] if m["name"] == "doc-denoise")
    shutil.copyfile(MODELS / entry["file"], tmp_path / entry["file"])
    monkeypatch.setattr(quantize, "build_task", lambda cfg: _Crops())
    return entry, tmp_path


def _quantized_convolutions(path: Path) -> set[str]:
    """Convolutions whose weight comes through a DequantizeLinear (int8) rather than straight from fp32."""
    graph = onnx.load(str(path)).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in graph.node if n.op_type in quantize.QUANTIZED_OPS and n.input[1] in dequantized}


def test_the_input_convolution_is_the_graphs_first():
    assert input_convolution(MODELS / "doc-denoise.onnx") == "/head/head.0/Conv"
    assert input_convolution(MODELS / "watermark.onnx").startswith("/head/")


def test_every_convolution_is_quantized_when_that_passes_the_check(doc_model):
    entry, out = doc_model
    variant = quantize_one(entry, out, REPO, calibration_batches=2, min_psnr=-math.inf)
    assert variant is not None and variant["quantization"]["kept_fp32"] == []
    assert "/head/head.0/Conv" in _quantized_convolutions(out / variant["file"])


def test_a_variant_missing_the_check_is_made_again_with_its_input_convolution_in_fp32(doc_model, monkeypatch):
    entry, out = doc_model
    real_psnr, calls = quantize.psnr, []

    def first_attempt_misses(a, b):  # the 4 check batches of the first attempt miss, the retry is measured
        calls.append(1)
        return 30.0 if len(calls) <= 4 else real_psnr(a, b)

    monkeypatch.setattr(quantize, "psnr", first_attempt_misses)
    variant = quantize_one(entry, out, REPO, calibration_batches=2, min_psnr=31.0)
    assert variant is not None and variant["quantization"]["kept_fp32"] == ["/head/head.0/Conv"]
    assert len(calls) == 8 and variant["quantization"]["psnr_vs_fp32_db_min"] >= 31.0
    quantized = _quantized_convolutions(out / variant["file"])
    assert "/head/head.0/Conv" not in quantized and "/tail/Conv" in quantized and len(quantized) == 21


def test_no_variant_when_both_attempts_miss(doc_model):
    entry, out = doc_model
    assert quantize_one(entry, out, REPO, calibration_batches=2, min_psnr=math.inf) is None
    assert not (out / "doc-denoise-int8.onnx").exists()
