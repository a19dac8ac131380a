"""The training loop: resumable (checkpoint every N steps), progress bar, loss curves as PNG.

Run directory ``training/runs/<name>/`` holds ``last.ckpt`` (model, optimizer, step, history, wall time),
``model.pt`` (final weights + config, what ``export`` reads), ``history.json`` and ``loss.png``.
Killing the process and running the same command again continues from ``last.ckpt``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from .builders import build_net, build_task
from .config import RUNS_DIR, TrainConfig
from .nets.colorizer import Colorizer, calibrate_chroma_gain
from .objectives import objective_for
from .validation import validation_batches, validation_psnr
from .warm_start import load_promoted

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr``."""
    o = cfg.optim
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    t = (step - o.warmup_steps) / max(1, o.steps - o.warmup_steps)
    return o.min_lr + 0.5 * (o.lr - o.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def _resume_key(config: dict[str, Any]) -> dict[str, Any]:
    # Thread count changes speed, not the run: a checkpoint may be resumed with another.
    return {k: v for k, v in config.items() if k != "threads"}


def _save_atomic(obj: Any, path: Path) -> None:
    # Write then rename: a kill during the save leaves the previous checkpoint intact.
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def plot_history(history: dict[str, list], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax1 = plt.subplots(figsize=(7, 4))
    steps, loss = history["step"], history["loss"]
    if steps:
        ax1.plot(steps, loss, lw=0.6, alpha=0.4, color="tab:blue")
        k = max(1, len(loss) // 50)  # running mean over ~2% of the run
        smooth = [sum(loss[max(0, i - k):i + 1]) / len(loss[max(0, i - k):i + 1]) for i in range(len(loss))]
        ax1.plot(steps, smooth, color="tab:blue", label="train loss")
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss")
    ax1.set_yscale("log")
    if history["val_step"]:
        ax2 = ax1.twinx()
        ax2.plot(history["val_step"], history["val_psnr"], "o-", color="tab:orange", ms=3, label="val PSNR")
        ax2.set_ylabel("validation PSNR (dB)")
    ax1.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(cfg: TrainConfig, run_dir: Path | None = None, command: str | None = None,
          max_steps: int | None = None, progress: bool = True, photos: list | None = None,
          threads: int | None = None) -> Path:
    """Trains (or resumes) ``cfg``; returns the path of the final ``model.pt``."""
    run_dir = Path(run_dir or RUNS_DIR / cfg.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads or cfg.threads)
    torch.set_flush_denormal(True)  # denormal activations late in training slow CPU convs many-fold
    torch.manual_seed(cfg.seed)
    command = command or " ".join(["python", "-m", "training", *sys.argv[1:]])
    total_steps = cfg.optim.steps if max_steps is None else min(max_steps, cfg.optim.steps)

    model = build_net(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    history: dict[str, list] = {"step": [], "loss": [], "val_step": [], "val_psnr": []}
    step, elapsed = 0, 0.0
    ckpt_path = run_dir / "last.ckpt"
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        # Through TrainConfig, so fields added later (at their defaults) do not block resuming older runs.
        if _resume_key(TrainConfig.from_dict(ckpt["config"]).to_dict()) != _resume_key(cfg.to_dict()):
            raise SystemExit(f"{ckpt_path} was made with another config; delete {run_dir} to start over")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        step, elapsed, history = ckpt["step"], ckpt["elapsed"], ckpt["history"]
        print(f"resuming {cfg.name} from step {step} ({elapsed / 60:.1f} min done)", flush=True)
    elif cfg.init_from:
        init = run_dir.parent / cfg.init_from / "model.pt"  # the parent run sits beside this one
        if not init.is_file():
            raise SystemExit(f"{cfg.name} starts from {init}: train {cfg.init_from} first")
        state = torch.load(init, map_location="cpu", weights_only=False)["state_dict"]
        try:
            model.load_state_dict(state)
        except RuntimeError:  # a new head on the parent's body (colorize-v3 on colorize-v2): copy what fits
            report = load_promoted(model, {k: v.numpy() for k, v in state.items()})
            print(f"{cfg.name}: {len(report['copied'])} tensors copied, new: {', '.join(report['new'])}", flush=True)
        print(f"{cfg.name}: weights initialised from {init}", flush=True)

    task = build_task(cfg, photos=photos)
    val = validation_batches(task)
    objective = objective_for(cfg.optim)

    def checkpoint() -> None:
        _save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                      "elapsed": elapsed, "history": history, "config": cfg.to_dict()}, ckpt_path)
        (run_dir / "history.json").write_text(json.dumps(history))
        plot_history(history, run_dir / "loss.png", f"{cfg.name} ({cfg.optim.loss})")

    model.train()
    bar = tqdm(total=total_steps, initial=step, desc=cfg.name, disable=not progress, mininterval=5, file=sys.stdout)
    started = time.perf_counter() - elapsed
    while step < total_steps:
        x, y = task.batch(step)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss, _ = objective(model, clean=y, inputs=x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt.step()
        step += 1
        history["step"].append(step)
        history["loss"].append(float(loss.item()))
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr_at(step - 1, cfg):.1e}", refresh=False)
        elapsed = time.perf_counter() - started
        if step % cfg.validate_every == 0 or step == total_steps:
            history["val_step"].append(step)
            history["val_psnr"].append(validation_psnr(model, val))
            bar.write(f"step {step}: loss {loss.item():.4f}, val PSNR {history['val_psnr'][-1]:.2f} dB, "
                      f"{elapsed / 60:.1f} min")
        if step % cfg.checkpoint_every == 0 or step == total_steps:
            checkpoint()
    bar.close()
    if not (run_dir / "loss.png").is_file():  # a 0-step run (graph-only change of an init_from model)
        checkpoint()

    if isinstance(model, Colorizer) and model.space == "lab" and cfg.net.get("chroma_gain") == "auto":
        model.eval()
        gain = calibrate_chroma_gain(model, val)
        bar.write(f"chroma gain calibrated on validation patches: {gain:.3f}")
    final = run_dir / "model.pt"
    _save_atomic({"config": cfg.to_dict(), "state_dict": model.state_dict(), "steps": step,
                  "wall_seconds": round(elapsed, 1), "command": command,
                  "val_psnr": history["val_psnr"][-1] if history["val_psnr"] else None}, final)
    RESULTS_DIR.mkdir(exist_ok=True)
    if run_dir.resolve().parent == RUNS_DIR.resolve():  # only real runs update the committed curves
        shutil.copyfile(run_dir / "loss.png", RESULTS_DIR / f"{cfg.name}-loss.png")
    return final


def load_trained(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The trained network of a ``model.pt`` (eval mode) and its metadata."""
    blob = torch.load(path, map_location="cpu", weights_only=False)
    cfg = TrainConfig.from_dict(blob["config"])
    model = build_net(cfg)
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model, blob
