"""GPU figures (run by bench/gpu.sh on the lent GPU machine): per shipped model, megapixels/s through ONNX
Runtime's CUDA execution provider with IO binding (fp32 and fp16) over a batch sweep of 512×512 tiles, against the
same weights in PyTorch CUDA eager (fp32 and autocast fp16). Writes gpu.json and gpu.md into --out."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TILE = 512
BATCHES = (1, 4, 8, 16, 32)


def timed(fn, repeats: int = 10) -> float:
    fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def ort_rows(entry: dict, path: Path, precision: str) -> list[dict]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    if session.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError(f"CUDA provider not active: {session.get_providers()}")
    rows = []
    for batch in BATCHES:
        data = np.random.default_rng(0).random((batch, entry["input"]["channels"], TILE, TILE), dtype=np.float32)
        binding = session.io_binding()
        binding.bind_ortvalue_input(entry["input"]["name"], ort.OrtValue.ortvalue_from_numpy(data, "cuda", 0))
        binding.bind_output(entry["output"]["name"], "cuda", 0)

        def run() -> None:
            session.run_with_iobinding(binding)
            binding.synchronize_outputs()

        seconds = timed(run)
        rows.append({"model": entry["name"], "backend": f"onnxruntime CUDA {precision}", "batch": batch,
                     "mp_per_s": round(batch * TILE * TILE / 1e6 / seconds, 1)})
    return rows


def torch_rows(entry: dict) -> list[dict]:
    from training.train import load_trained

    weights = REPO / "training" / "weights" / f"{entry['name']}.pt"
    model, _ = load_trained(weights)
    model = model.cuda().eval()
    rows = []
    for precision in ("fp32", "fp16"):
        for batch in BATCHES:
            data = torch.rand(batch, entry["input"]["channels"], TILE, TILE, device="cuda")

            def run() -> None:
                with torch.inference_mode(), torch.autocast("cuda", torch.float16, enabled=precision == "fp16"):
                    model(data)

            seconds = timed(run)
            rows.append({"model": entry["name"], "backend": f"torch CUDA eager {precision}", "batch": batch,
                         "mp_per_s": round(batch * TILE * TILE / 1e6 / seconds, 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--torch-only", action="store_true")
    args = parser.parse_args()
    manifest = json.loads((REPO / "services" / "models" / "manifest.json").read_text())
    rows, errors = [], []
    for entry in manifest["models"]:
        rows += torch_rows(entry)
        if args.torch_only:
            continue
        for precision, path in (("fp32", REPO / "services" / "models" / entry["file"]),
                                ("fp16", REPO / ".gpu" / "fp16" / f"{entry['name']}.onnx")):
            try:
                rows += ort_rows(entry, path, precision)
            except Exception as exc:  # report and go on: the other figures are still worth bringing back
                errors.append(f"{entry['name']} {precision}: {exc}")
        print(json.dumps(rows[-1]), flush=True)
    device = torch.cuda.get_device_name(0)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps({"device": device, "tile": TILE, "rows": rows, "errors": errors},
                                                  indent=2))
    lines = [f"# GPU throughput ({device}, {TILE}×{TILE} tiles)", "", "| model | backend | batch | MP/s |",
             "|---|---|---|---|"] + [f"| {r['model']} | {r['backend']} | {r['batch']} | {r['mp_per_s']} |" for r in rows]
    if errors:
        lines += ["", "Errors:", *[f"- {e}" for e in errors]]
    (args.out / "gpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
