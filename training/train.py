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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .builders import build_net, build_optimizer, build_task
from .config import RUNS_DIR, TrainConfig
from .nets.colorizer import Colorizer, calibrate_chroma_gain
from .objectives import objective_for
from .step import optimizer_step
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

    run = Run.start(cfg, run_dir)
    task = build_task(cfg, photos=photos)
    val = validation_batches(task)
    objective = objective_for(cfg.optim)

    run.model.train()
    bar = tqdm(total=total_steps, initial=run.step, desc=cfg.name, disable=not progress, mininterval=5,
               file=sys.stdout)
    started = time.perf_counter() - run.elapsed
    while run.step < total_steps:
        x, y = task.batch(run.step)
        lr = lr_at(run.step, cfg)
        loss = optimizer_step(run.model, run.optimizer, objective, x, y, lr, cfg.optim.grad_clip)
        run.record_step(loss, elapsed=time.perf_counter() - started)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.1e}", refresh=False)
        if _due(run.step, cfg.validate_every, total_steps):
            psnr = run.validate(val)
            bar.write(f"step {run.step}: loss {loss.item():.4f}, val PSNR {psnr:.2f} dB, {run.elapsed / 60:.1f} min")
        if _due(run.step, cfg.checkpoint_every, total_steps):
            run.save_checkpoint()
    bar.close()
    if not (run_dir / "loss.png").is_file():  # a 0-step run (graph-only change of an init_from model)
        run.save_checkpoint()
    return run.finish(val, command)


def _due(step: int, every: int, total_steps: int) -> bool:
    return step % every == 0 or step == total_steps


def _new_history() -> dict[str, list]:
    return {"step": [], "loss": [], "val_step": [], "val_psnr": []}


@dataclass
class Run:
    """One run in its directory: the network and optimiser, the step reached, the wall time spent and the curves.

    ``last.ckpt`` holds exactly this (model, optimizer, step, elapsed, history, config); a run started again
    continues from it, and only with the config that made it.
    """

    cfg: TrainConfig
    dir: Path
    model: nn.Module
    optimizer: torch.optim.Optimizer
    step: int = 0
    elapsed: float = 0.0
    history: dict[str, list] = field(default_factory=_new_history)

    @property
    def checkpoint_path(self) -> Path:
        return self.dir / "last.ckpt"

    @classmethod
    def start(cls, cfg: TrainConfig, run_dir: Path) -> "Run":
        """Resumed from ``last.ckpt`` if there is one; otherwise fresh, from the parent run's weights if
        ``cfg.init_from`` names one."""
        model = build_net(cfg)
        run = cls(cfg, run_dir, model, build_optimizer(model, cfg))
        if run.checkpoint_path.is_file():
            run._resume()
        elif cfg.init_from:
            run._init_from_parent()
        return run

    def _resume(self) -> None:
        ckpt = torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        # Through TrainConfig, so fields added later (at their defaults) do not block resuming older runs.
        if _resume_key(TrainConfig.from_dict(ckpt["config"]).to_dict()) != _resume_key(self.cfg.to_dict()):
            raise SystemExit(f"{self.checkpoint_path} was made with another config; delete {self.dir} to start over")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.step, self.elapsed, self.history = ckpt["step"], ckpt["elapsed"], ckpt["history"]
        print(f"resuming {self.cfg.name} from step {self.step} ({self.elapsed / 60:.1f} min done)", flush=True)

    def _init_from_parent(self) -> None:
        cfg = self.cfg
        init = self.dir.parent / cfg.init_from / "model.pt"  # the parent run sits beside this one
        if not init.is_file():
            raise SystemExit(f"{cfg.name} starts from {init}: train {cfg.init_from} first")
        state = torch.load(init, map_location="cpu", weights_only=False)["state_dict"]
        try:
            self.model.load_state_dict(state)
        except RuntimeError:  # a new head on the parent's body (colorize-v3 on colorize-v2): copy what fits
            report = load_promoted(self.model, {k: v.numpy() for k, v in state.items()})
            print(f"{cfg.name}: {len(report['copied'])} tensors copied, new: {', '.join(report['new'])}", flush=True)
        print(f"{cfg.name}: weights initialised from {init}", flush=True)

    def record_step(self, loss: Tensor, elapsed: float) -> None:
        self.step += 1
        self.elapsed = elapsed
        self.history["step"].append(self.step)
        self.history["loss"].append(float(loss.item()))

    def validate(self, batches: list[tuple[Tensor, Tensor]]) -> float:
        psnr = validation_psnr(self.model, batches)
        self.history["val_step"].append(self.step)
        self.history["val_psnr"].append(psnr)
        return psnr

    def save_checkpoint(self) -> None:
        """``last.ckpt``, ``history.json`` and the loss curve ``loss.png``."""
        _save_atomic({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                      "elapsed": self.elapsed, "history": self.history, "config": self.cfg.to_dict()},
                     self.checkpoint_path)
        (self.dir / "history.json").write_text(json.dumps(self.history))
        plot_history(self.history, self.dir / "loss.png", f"{self.cfg.name} ({self.cfg.optim.loss})")

    def finish(self, val: list[tuple[Tensor, Tensor]], command: str) -> Path:
        """Calibrates what is calibrated after training, writes ``model.pt`` (what ``export`` reads) and, for a
        run under training/runs, copies its loss curve to training/results."""
        model, cfg = self.model, self.cfg
        if isinstance(model, Colorizer) and model.space == "lab" and cfg.net.get("chroma_gain") == "auto":
            model.eval()
            gain = calibrate_chroma_gain(model, val)
            tqdm.write(f"chroma gain calibrated on validation patches: {gain:.3f}", file=sys.stdout)
        final = self.dir / "model.pt"
        _save_atomic({"config": cfg.to_dict(), "state_dict": model.state_dict(), "steps": self.step,
                      "wall_seconds": round(self.elapsed, 1), "command": command,
                      "val_psnr": self.history["val_psnr"][-1] if self.history["val_psnr"] else None}, final)
        RESULTS_DIR.mkdir(exist_ok=True)
        if self.dir.resolve().parent == RUNS_DIR.resolve():  # only real runs update the committed curves
            shutil.copyfile(self.dir / "loss.png", RESULTS_DIR / f"{cfg.name}-loss.png")
        return final


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


def load_trained(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The trained network of a ``model.pt`` (eval mode) and its metadata."""
    blob = torch.load(path, map_location="cpu", weights_only=False)
    cfg = TrainConfig.from_dict(blob["config"])
    model = build_net(cfg)
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model, blob
