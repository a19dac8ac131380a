"""Model speed: megapixels/s of each shipped model through ONNX Runtime against the same weights in PyTorch eager,
same thread count, same tiling (the service's own tiler drives both), on 0.25, 1, 4 and 16 MP inputs, the two
backends alternating within one run. Plus ORT sweeps at 1 MP: tile size, batch size, graph optimisation on/off.
Int8 variants (export/quantize.py) are timed too when the manifest has them. Target: ONNX Runtime ≥ 1.5× PyTorch
eager on this CPU.

Usage: python bench/model_speed.py [--models doc-denoise,...] [--sizes 0.25,1,4,16] [--threads 2] [--repeats 5]
Needs the `train` extra (torch). PyTorch runs the weights read back from the shipped ONNX files.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from common import REPO, markdown_table, write_results  # noqa: E402

import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from services.config import Settings  # noqa: E402
from services.inference.registry import load_manifest  # noqa: E402
from services.inference.tiling import TilePlan, run_tiled  # noqa: E402

def load_torch(spec, onnx_path: Path) -> torch.nn.Module:
    """The PyTorch network of a shipped model, with the very weights inside its ONNX file.

    The network is built from the training config the manifest names; the export keeps parameter names, so the
    ONNX initializers load straight into its state dict (strict: every parameter must be there).
    """
    import onnx
    from onnx import numpy_helper

    from training.config import TrainConfig
    from training.builders import build_net

    net = build_net(TrainConfig.load(REPO / spec.training["config"]))
    weights = {init.name: torch.from_numpy(numpy_helper.to_array(init).copy())
               for init in onnx.load(str(onnx_path)).graph.initializer}
    state = net.state_dict()
    net.load_state_dict({name: weights[name] for name in state}, strict=True)
    return net.eval()


def check_same_outputs(net: torch.nn.Module, session: ort.InferenceSession, spec) -> float:
    """Max abs difference of the two backends on one tile: proves the comparison runs the same model."""
    mult = spec.tiling.multiple_of
    tile = image((mult * 8) ** 2 / 1e6, spec.input.channels)[:, : mult * 8, : mult * 8][None]
    with torch.inference_mode():
        ours = net(torch.from_numpy(np.ascontiguousarray(tile))).numpy()
    theirs = session.run(None, {spec.input.name: np.ascontiguousarray(tile)})[0]
    difference = float(np.abs(ours - theirs).max())
    assert difference < 1e-3, f"{spec.name}: PyTorch and ONNX Runtime disagree by {difference}"
    return difference


def ort_session(path: Path, threads: int, optimize: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def image(megapixels: float, channels: int, seed: int = 0) -> np.ndarray:
    side = int(round((megapixels * 1e6) ** 0.5))
    rng = np.random.default_rng(seed)
    # Smooth content plus noise: closer to a real image than white noise, same cost for a conv net.
    base = np.cumsum(np.cumsum(rng.standard_normal((channels, side, side)), 1), 2)
    base = (base - base.min()) / (np.ptp(base) + 1e-9)
    return np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1).astype(np.float32)


def tiled_seconds(infer, pixels: np.ndarray, cout: int, tile: int, overlap: int, multiple: int, batch: int) -> float:
    c, h, w = pixels.shape
    plan = TilePlan.for_image(h, w, tile, overlap, multiple)
    started = time.perf_counter()
    run_tiled(plan, lambda r, col: pixels[:, r][:, :, col], infer, lambda first, rows: None, cout, batch)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="")
    parser.add_argument("--sizes", default="0.25,1,4,16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = Settings()
    manifest = load_manifest(settings.model_dir)
    wanted = [m for m in manifest.models if not args.models or m.name in args.models.split(",")]
    sizes = [float(s) for s in args.sizes.split(",")]

    speed_rows, sweep_rows = [], []
    for spec in wanted:
        session = ort_session(settings.model_dir / spec.file, args.threads)
        variant = next((v for v in spec.variants if v.precision == "int8"), None)
        quantized = ort_session(settings.model_dir / variant.file, args.threads) if variant else None
        net = load_torch(spec, settings.model_dir / spec.file)
        parity = check_same_outputs(net, session, spec)
        cin, cout = spec.input.channels, spec.output.channels
        tile, overlap, mult = spec.tiling.tile_size, spec.tiling.overlap, spec.tiling.multiple_of

        def run_ort(batch: np.ndarray, s=session, name=spec.input.name) -> np.ndarray:
            return s.run(None, {name: batch})[0]

        def run_int8(batch: np.ndarray, s=quantized, name=spec.input.name) -> np.ndarray:
            return s.run(None, {name: batch})[0]

        def run_torch(batch: np.ndarray, model=net) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(np.ascontiguousarray(batch))).numpy()

        for megapixels in sizes:
            pixels = image(megapixels, cin)
            runners = {"ort": run_ort, "torch": run_torch} | ({"int8": run_int8} if quantized else {})
            times = {key: [] for key in runners}
            # Warm each on these very tile shapes: oneDNN and ORT both prepare kernels per input shape.
            for run in runners.values():
                tiled_seconds(run, pixels, cout, tile, overlap, mult, args.batch)
            for _ in range(args.repeats):  # alternate, so drifts in machine load hit all alike
                for key, run in runners.items():
                    times[key].append(tiled_seconds(run, pixels, cout, tile, overlap, mult, args.batch))
            ort_s, torch_s = min(times["ort"]), min(times["torch"])
            int8_s = min(times["int8"]) if quantized else None
            served_s = int8_s if quantized else ort_s  # what IMGRESTORE_PRECISION=auto runs on the CPU
            speed_rows.append({"model": spec.name, "megapixels": megapixels,
                               "torch_mp_per_s": round(megapixels / torch_s, 3),
                               "ort_fp32_mp_per_s": round(megapixels / ort_s, 3),
                               "ort_int8_mp_per_s": round(megapixels / int8_s, 3) if int8_s else None,
                               "served_s_per_mp": round(served_s / megapixels, 3),
                               "fp32_speedup": round(torch_s / ort_s, 2),
                               "served_speedup": round(torch_s / served_s, 2), "max_abs_diff": f"{parity:.1e}"})
            print(speed_rows[-1], flush=True)

        one = image(1.0, cin)
        tiled_seconds(run_ort, one, cout, tile, overlap, mult, args.batch)
        for label, value in [("tile", t) for t in (256, 384, 512, 768)] + [("batch", b) for b in (1, 2, 4, 8)]:
            t = value if label == "tile" else tile
            b = value if label == "batch" else args.batch
            seconds = min(tiled_seconds(run_ort, one, cout, max(t, mult), min(overlap, t // 2), mult, b)
                          for _ in range(args.repeats))
            sweep_rows.append({"model": spec.name, "sweep": label, "value": value, "mp_per_s": round(1 / seconds, 3)})
        plain = ort_session(settings.model_dir / spec.file, args.threads, optimize=False)
        off = min(tiled_seconds(lambda b, s=plain, n=spec.input.name: s.run(None, {n: b})[0], one, cout,
                                tile, overlap, mult, args.batch) for _ in range(args.repeats))
        on = min(tiled_seconds(run_ort, one, cout, tile, overlap, mult, args.batch) for _ in range(args.repeats))
        sweep_rows.append({"model": spec.name, "sweep": "graph optimisation", "value": "off", "mp_per_s": round(1 / off, 3)})
        sweep_rows.append({"model": spec.name, "sweep": "graph optimisation", "value": "all", "mp_per_s": round(1 / on, 3)})

    worst = min((r["served_speedup"] for r in speed_rows), default=0.0)
    write_results("model_speed", "Model speed: ONNX Runtime vs PyTorch eager (CPU)", {
        "threads": args.threads, "repeats": args.repeats, "batch": args.batch, "speed": speed_rows,
        "sweeps": sweep_rows, "target_speedup": 1.5, "min_speedup": worst, "met": worst >= 1.5}, [
        ("Megapixels per second (tiled as the service does; best of `--repeats` runs: noise only adds time)",
         markdown_table(speed_rows)),
        ("ONNX Runtime sweeps at 1 MP", markdown_table(sweep_rows)),
        ("Result", f"Smallest speed-up of what the service runs on this CPU (ONNX Runtime, int8 where a variant "
                   f"passed its quality gate, else fp32) over PyTorch eager: **{worst:.2f}×** (target ≥ 1.5×: "
                   f"{'met' if worst >= 1.5 else 'missed'}). `fp32_speedup` is ONNX Runtime fp32 alone.")])


if __name__ == "__main__":
    sys.exit(main())
