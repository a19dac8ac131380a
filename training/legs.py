"""Training legs: time-boxed continuations of a shipped model, so training compute accumulates across sessions.

A leg starts from the **promoted** weights — read back from the shipped ONNX file, whose initializers carry
the PyTorch parameter names, so nothing but the ONNX file has to be committed — and trains for a wall-clock
budget with a warm restart of the schedule (short warm-up, cosine decay over the leg's time). Batches come
from a fresh seed per leg (new crops, new noise, new pages), made in a worker process so data generation
overlaps the training step. bf16 autocast and channels-last on CPUs that have bf16.

State lives in ``training/runs/<model>-leg/``: ``leg.ckpt`` (model, optimizer, step, elapsed, budget; written
atomically every few minutes: killing the process and running the same command again continues the leg),
and ``model.pt`` when the leg ends (what ``export`` and :mod:`training.promote` read). ``touch STOP`` there
ends a leg early, cleanly.

Where the config's network differs from the promoted one (a new architecture's first leg), the matching
parameters are copied by name and the rest start fresh (:mod:`training.warm_start`).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .builders import build_net, build_optimizer, build_task
from .config import RUNS_DIR, TrainConfig, default_config_path, leg_config
from .objectives import objective_for
from .step import optimizer_step
from .validation import validation_batches, validation_psnr
from .warm_start import load_promoted, onnx_weights

MODELS_DIR = Path(__file__).resolve().parents[1] / "services" / "models"
LEGS_LOG = Path(__file__).resolve().parent / "results" / "legs.jsonl"
LEG_SEED_STRIDE = 7919  # leg k draws its batches from seed cfg.seed + k * stride: fresh data every leg


@dataclass
class LegSettings:
    minutes: float
    threads: int = 2
    lr: float | None = None  # peak LR of the warm restart (default: the config's)
    warmup_steps: int = 50
    bf16: bool = True
    workers: int = 1  # data-generation processes (0: in the training process)
    checkpoint_minutes: float = 3.0
    device: str = "cpu"  # "cuda" on a lent GPU machine (training/gpu.sh)
    batch_scale: int = 1  # batches of batch_scale × the config's batch size (a GPU wants more than a CPU)


def leg_lr(elapsed: float, budget: float, step: int, peak: float, min_lr: float, warmup: int) -> float:
    """Warm restart: linear warm-up over ``warmup`` steps, then cosine from ``peak`` to ``min_lr`` over the budget."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = min(1.0, elapsed / max(1e-9, budget))
    return min_lr + 0.5 * (peak - min_lr) * (1 + math.cos(math.pi * t))


class _Batches(torch.utils.data.IterableDataset):
    """Batches ``task.batch(step)`` for step = first, first + 1, … (a pure function of the step: resumable).

    With several workers, worker k makes steps first + k, first + k + n, …; the loader interleaves them back
    in step order.
    """

    def __init__(self, task: Any, first: int, workers: int) -> None:
        self.task, self.first, self.workers = task, first, max(1, workers)

    def __iter__(self):
        torch.set_num_threads(1)
        info = torch.utils.data.get_worker_info()
        step = self.first + (info.id if info else 0)
        while True:
            yield self.task.batch(step)
            step += self.workers


def leg_count(model_name: str, log: Path) -> int:
    if not log.is_file():
        return 0
    return sum(1 for line in log.read_text().splitlines() if line.strip() and json.loads(line)["model"] == model_name)


def bf16_supported() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def run_leg(model_name: str, settings: LegSettings, run_dir: Path | None = None, config: Path | None = None,
            leg_index: int = 0, photos: list | None = None, progress: bool = True,
            models_dir: Path = MODELS_DIR) -> Path:
    """Trains one leg (or finishes an interrupted one) and returns the path of its ``model.pt``."""
    cfg = TrainConfig.load(config or default_config_path(leg_config(model_name)))
    run_dir = Path(run_dir or RUNS_DIR / f"{model_name}-leg")
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(settings.threads)
    torch.set_flush_denormal(True)
    ckpt_path = run_dir / "leg.ckpt"
    device = torch.device(settings.device)
    model = build_net(cfg)
    opt = build_optimizer(model, cfg)
    history: dict[str, list] = {"step": [], "loss": [], "val_step": [], "val_psnr": []}
    step, elapsed, budget = 0, 0.0, settings.minutes * 60.0
    init: dict[str, Any] = {}
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ckpt["config"] != cfg.to_dict():
            raise SystemExit(f"{ckpt_path} was made with another config; remove {run_dir} to start a new leg")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        step, elapsed, history = ckpt["step"], ckpt["elapsed"], ckpt["history"]
        # A rerun may shorten the leg (the schedule then anneals by the new end), never extend it.
        budget = min(ckpt["budget"], budget)
        leg_index, init = ckpt["leg_index"], ckpt["init"]
        print(f"{model_name}: resuming leg {leg_index} at step {step} ({elapsed / 60:.1f} of {budget / 60:.0f} min)",
              flush=True)
    else:
        promoted = models_dir / f"{model_name}.onnx"
        report = load_promoted(model, onnx_weights(promoted))
        init = {"from": f"{models_dir.name}/{promoted.name}", **{k: len(v) for k, v in report.items()}}
        print(f"{model_name}: leg {leg_index} starts from {promoted.name}: {init}", flush=True)

    seed = cfg.seed + LEG_SEED_STRIDE * (leg_index + 1)
    data = {**cfg.data, "batch_size": int(cfg.data.get("batch_size", 12)) * settings.batch_scale}
    cfg_leg = TrainConfig.from_dict({**cfg.to_dict(), "seed": seed, "data": data})
    task = build_task(cfg_leg, photos=photos)
    val = validation_batches(task, device)
    use_bf16 = settings.bf16 and (device.type == "cuda" or bf16_supported())
    model = model.to(device, memory_format=torch.channels_last)
    opt.load_state_dict(opt.state_dict())  # moves the optimizer state to the model's device
    peak = settings.lr or cfg.optim.lr
    objective = objective_for(cfg.optim)

    def checkpoint() -> None:
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "elapsed": elapsed,
                    "budget": budget, "history": history, "config": cfg.to_dict(), "leg_index": leg_index,
                    "init": init}, tmp)
        os.replace(tmp, ckpt_path)

    loader = torch.utils.data.DataLoader(_Batches(task, step, settings.workers), batch_size=None,
                                         num_workers=settings.workers, prefetch_factor=4 if settings.workers else None,
                                         pin_memory=device.type == "cuda")
    started = time.perf_counter() - elapsed
    last_ckpt = time.perf_counter()
    last_print = time.perf_counter()
    pixels_per_step = 0
    model.train()
    stop_file = run_dir / "STOP"  # `touch` it to end the leg early, cleanly (weights saved, then evaluated)
    for x, y in loader:
        if elapsed >= budget or stop_file.exists():
            break
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        y = y.to(device, non_blocking=True)
        pixels_per_step = x.shape[0] * x.shape[2] * x.shape[3]
        lr = leg_lr(elapsed, budget, step, peak, cfg.optim.min_lr, settings.warmup_steps)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else None
        loss = optimizer_step(model, opt, objective, x, y, lr, cfg.optim.grad_clip, autocast)
        step += 1
        elapsed = time.perf_counter() - started
        history["step"].append(step)
        history["loss"].append(float(loss.item()))
        now = time.perf_counter()
        if progress and now - last_print > 60:
            mp_s = pixels_per_step * step / max(1e-9, elapsed) / 1e6 if not history["val_step"] else None
            print(f"step {step}: loss {np.mean(history['loss'][-50:]):.4f} lr {lr:.2e} "
                  f"{elapsed / 60:.1f}/{budget / 60:.0f} min" + (f" {mp_s:.2f} MP/s" if mp_s else ""), flush=True)
            last_print = now
        if now - last_ckpt > settings.checkpoint_minutes * 60:
            history["val_step"].append(step)
            history["val_psnr"].append(validation_psnr(model, val))
            print(f"step {step}: val PSNR {history['val_psnr'][-1]:.2f} dB", flush=True)
            checkpoint()
            last_ckpt = time.perf_counter()
    history["val_step"].append(step)
    history["val_psnr"].append(validation_psnr(model, val))
    checkpoint()
    final = run_dir / "model.pt"
    model = model.to("cpu", memory_format=torch.contiguous_format)
    blob = {"config": cfg.to_dict(), "state_dict": model.state_dict(), "steps": step,
            "wall_seconds": round(elapsed, 1), "val_psnr": history["val_psnr"][-1],
            "command": " ".join(["python", "-m", "training", *sys.argv[1:]]),
            "leg": {"index": leg_index, "seed": seed, "minutes": round(elapsed / 60, 1), "steps": step,
                    "crops": step * task.batch_size, "pixels": step * pixels_per_step, "bf16": use_bf16,
                    "threads": settings.threads, "workers": settings.workers, "peak_lr": peak, "init": init,
                    "device": device.type if device.type == "cpu" else torch.cuda.get_device_name(device),
                    "pixels_per_second": round(step * pixels_per_step / max(1e-9, elapsed))}}
    tmp = final.with_suffix(".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, final)
    print(f"{model_name}: leg {leg_index} done: {step} steps in {elapsed / 60:.1f} min, "
          f"val PSNR {history['val_psnr'][-1]:.2f} dB -> {final}", flush=True)
    return final
