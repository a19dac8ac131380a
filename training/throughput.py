"""``python -m training.throughput [MODEL ...] [--seconds S]``: training speed per model, before and after.

"before": how the first shipped models were trained — fp32, contiguous tensors, one thread, batches made in the
training process. "after": how a leg trains (``training.legs``) — bf16 autocast and channels-last where the CPU
has bf16, two threads, batches made in a worker process. With ``--compile``, a third setting: "after" with the
loss (the net's forward and the objective's terms) wrapped in ``torch.compile``, its compile time reported apart,
to tell whether legs should compile. Same config, same batches, same optimiser; each setting runs for ``seconds``
after a warm-up, and the leg's loss is checked to stay finite and close to fp32's.
Writes ``training/results/throughput.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from .builders import build_net, build_task
from .config import MODEL_NAMES, TrainConfig, default_config_path, leg_config
from .legs import _Batches, bf16_supported
from .objectives import objective_for
from .quality.common import RESULTS
from .step import optimizer_step


def measure(name: str, bf16: bool, threads: int, workers: int, seconds: float, warmup: int = 3,
            compiled: bool = False) -> dict:
    cfg = TrainConfig.load(default_config_path(leg_config(name)))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_net(cfg)
    if bf16:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    task = build_task(cfg)
    loader = torch.utils.data.DataLoader(_Batches(task, 0, workers), batch_size=None, num_workers=workers,
                                         prefetch_factor=4 if workers else None)
    objective = objective_for(cfg.optim)
    if compiled:  # the whole loss (the net's forward and the terms), not the net: objectives call its own methods
        objective = torch.compile(objective)
    steps, pixels, losses, started = 0, 0, [], None
    warming = time.perf_counter()
    for x, y in loader:
        if bf16:
            x = x.contiguous(memory_format=torch.channels_last)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else None
        loss = optimizer_step(model, opt, objective, x, y, lr=1e-5, grad_clip=0.0, autocast=autocast)
        steps += 1
        if steps == warmup:
            started, pixels = time.perf_counter(), 0
            warmup_seconds = started - warming  # a compiled loss's compile time lands here
            continue
        if started is not None:
            pixels += x.shape[0] * x.shape[2] * x.shape[3]
            losses.append(float(loss))
            if time.perf_counter() - started >= seconds:
                break
    elapsed = time.perf_counter() - started
    n = steps - warmup
    return {"steps": n, "crops_per_s": round(n * task.batch_size / elapsed, 2),
            "megapixels_per_s": round(pixels / elapsed / 1e6, 3), "mean_loss": sum(losses) / len(losses),
            "warmup_s": round(warmup_seconds, 1)}


def cpu_model() -> str:
    """The CPU's marketing name ("AMD EPYC …"); platform.processor() says only "x86_64" on Linux."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_report(machine: dict, rows: dict, seconds: float, out: Path) -> None:
    """``throughput.json`` (the measurements) and ``throughput.md`` (their tables) under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "throughput.json").write_text(json.dumps({"machine": machine, "models": rows}, indent=1) + "\n")
    lines = ["# Training throughput per model (this machine, 2 cores)", "",
             "before: fp32, 1 thread, batches made in the training process (how the first models were trained); "
             "after: bf16 autocast + channels-last, 2 threads, batches from a worker process (how a leg trains). "
             f"Same configs and batches; {seconds:.0f} s per setting after 3 warm-up steps. Machine: "
             f"{machine['cpu']}, {machine['cores']} cores, bf16 {'yes' if machine['bf16'] else 'no'}, "
             f"torch {machine['torch']}.", "",
             "| model | config | before crops/s | before MP/s | after crops/s | after MP/s | speed-up | loss before / after |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        b, a = r["before"], r["after"]
        lines.append(f"| {name} | {r['config']} | {b['crops_per_s']} | {b['megapixels_per_s']} | {a['crops_per_s']} | "
                     f"{a['megapixels_per_s']} | {r['speedup']}× | {b['mean_loss']:.4f} / {a['mean_loss']:.4f} |")
    compiled = {name: r for name, r in rows.items() if "compiled" in r}
    if compiled:
        lines += ["", "With `--compile` (the after setting, its loss wrapped in `torch.compile`; compile time apart):", "",
                  "| model | after MP/s | compiled MP/s | compiled / after | compile warm-up s |", "|---|---|---|---|---|"]
        for name, r in compiled.items():
            lines.append(f"| {name} | {r['after']['megapixels_per_s']} | {r['compiled']['megapixels_per_s']} | "
                         f"{r['compile_speedup']}× | {r['compiled']['warmup_s']} |")
    (out / "throughput.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.throughput")
    p.add_argument("models", nargs="*", default=list(MODEL_NAMES))
    p.add_argument("--seconds", type=float, default=45.0)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--compile", action="store_true", help="also measure the leg setting under torch.compile")
    args = p.parse_args(argv)
    rows = {}
    for name in args.models:
        before = measure(name, bf16=False, threads=1, workers=0, seconds=args.seconds)
        after = measure(name, bf16=bf16_supported(), threads=2, workers=1, seconds=args.seconds)
        rows[name] = {"config": leg_config(name), "before": before, "after": after,
                      "speedup": round(after["megapixels_per_s"] / before["megapixels_per_s"], 2)}
        if args.compile:
            compiled = measure(name, bf16=bf16_supported(), threads=2, workers=1, seconds=args.seconds, compiled=True)
            rows[name].update(compiled=compiled,
                              compile_speedup=round(compiled["megapixels_per_s"] / after["megapixels_per_s"], 2))
        print(name, json.dumps(rows[name]), flush=True)
    machine = {"cpu": cpu_model(), "bf16": bf16_supported(),
               "torch": torch.__version__, "cores": os.cpu_count()}
    write_report(machine, rows, args.seconds, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
