"""``python -m export.quantize [NAME ...] [--out DIR]``: int8 variants of the exported models for CPU serving.

Static QDQ quantisation (per-channel int8 weights, uint8 activations) calibrated on fresh batches of each model's
own training distribution (never the evaluation set), kept only when its outputs stay within ``--min-psnr`` dB of
the fp32 model on other fresh batches. The variant is recorded in the model's manifest entry (with the sha256 of
the fp32 file it was made from); the service runs it on the CPU provider (``IMGRESTORE_PRECISION=auto``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from training.config import TrainConfig
from training.builders import build_task

from .manifest import read_manifest, sha256_file, write_manifest

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "services" / "models"
CALIBRATION_STEP = 10_000_000  # far past any training step: batches the model never saw
# Calibration batches per model where the default 16 is not enough: colorize's whole-image activations reach
# ranges that 16 patches never show (measured: outputs only 34-49 dB from fp32; 256 keeps its bars).
CALIBRATION_BATCHES = {"colorize": 256}
# Only the convolutions (where the time goes); colour conversions and blends stay fp32.
QUANTIZED_OPS = ["Conv", "ConvTranspose"]


class TrainingBatches(CalibrationDataReader):
    def __init__(self, task, input_name: str, first_step: int, count: int) -> None:
        self.items = [{input_name: np.ascontiguousarray(task.batch(first_step + i)[0].numpy(), dtype=np.float32)}
                      for i in range(count)]
        self.reset()

    def reset(self) -> None:
        self._iter = iter(self.items)

    def get_next(self) -> dict | None:
        return next(self._iter, None)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def input_convolution(model: Path) -> str:
    """Name of the first convolution of ``model``'s graph (ONNX lists nodes in topological order)."""
    import onnx

    return next(n.name for n in onnx.load(str(model)).graph.node if n.op_type in QUANTIZED_OPS)


def quantize_one(entry: dict, out: Path, repo: Path, calibration_batches: int, min_psnr: float) -> dict | None:
    cfg = TrainConfig.load(repo / entry["training"]["config"])
    task = build_task(cfg)
    source = out / entry["file"]
    target = out / f"{entry['name']}-int8.onnx"
    name = entry["input"]["name"]
    started = time.perf_counter()
    calibration = TrainingBatches(task, name, CALIBRATION_STEP, calibration_batches)
    check = TrainingBatches(task, name, CALIBRATION_STEP + 1000, 4)
    fp32 = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    # Every convolution first; where that misses the check, again with the input convolution left in fp32: its
    # error reaches every later layer (doc-denoise-v5: 37.8 dB all int8, 39.2 without it, still 1.65x fp32's speed).
    for kept_fp32 in ([], [input_convolution(source)]):
        calibration.reset()
        quantize_static(str(source), str(target), calibration,
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, op_types_to_quantize=QUANTIZED_OPS, nodes_to_exclude=kept_fp32)
        int8 = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        agreement = min(psnr(fp32.run(None, item)[0], int8.run(None, item)[0]) for item in check.items)
        if agreement >= min_psnr:
            break
        print(f"{entry['name']}: int8{' without ' + kept_fp32[0] if kept_fp32 else ''} only {agreement:.1f} dB "
              f"from fp32 (< {min_psnr})", file=sys.stderr)
    else:
        target.unlink()
        print(f"{entry['name']}: no int8 variant", file=sys.stderr)
        return None
    return {"precision": "int8", "file": target.name, "sha256": sha256_file(target),
            "providers": ["CPUExecutionProvider"], "source_sha256": entry["sha256"],
            "quantization": {"method": "onnxruntime static QDQ, per-channel int8 weights, uint8 activations",
                             "calibration": f"{calibration_batches} fresh training batches of {cfg.name}",
                             "kept_fp32": kept_fp32,
                             "psnr_vs_fp32_db_min": round(agreement, 2),
                             "seconds": round(time.perf_counter() - started, 1)}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.quantize")
    p.add_argument("names", nargs="*")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--calibration-batches", type=int,
                   help=f"default 16, or per model: {CALIBRATION_BATCHES}")
    p.add_argument("--min-psnr", type=float, default=38.0, help="int8 vs fp32 agreement needed to keep a variant")
    args = p.parse_args(argv)
    repo = Path(__file__).resolve().parents[1]
    manifest_path = args.out / "manifest.json"
    manifest = read_manifest(manifest_path)
    for entry in manifest["models"]:
        if args.names and entry["name"] not in args.names:
            continue
        batches = args.calibration_batches or CALIBRATION_BATCHES.get(entry["name"], 16)
        variant = quantize_one(entry, args.out, repo, batches, args.min_psnr)
        entry["variants"] = [v for v in entry.get("variants", []) if v["precision"] != "int8"]
        if variant:
            entry["variants"].append(variant)
            print(f"{entry['name']}: {variant['file']} ({variant['quantization']['psnr_vs_fp32_db_min']} dB from fp32)")
    write_manifest(manifest_path, manifest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
