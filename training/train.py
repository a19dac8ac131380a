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
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from .builders import build_net, build_task
from .config import RUNS_DIR, TrainConfig
from .nets.ab_bins import soft_encode
from .nets.color import rgb_to_lab
from .nets.colorizer import AB_SCALE, Colorizer, calibrate_chroma_gain
from .nets.noise_aware import NoiseAwareDenoiser
from .nets.unet import MAX_OPACITY
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


def compute_loss(model: nn.Module, x: Tensor, y: Tensor, kind: str, clean_weight: float = 1.0,
                 alpha_weight: float = 0.1) -> Tensor:
    if kind in ("lab_ab_l1", "lab_ab_mse"):
        assert isinstance(model, Colorizer) and model.space == "lab"
        _, ab, _ = model.predict_ab(x)
        target = rgb_to_lab(y[:, :3])[:, 1:]  # targets may carry a class-weight channel
        # L1 -> conditional median (more saturated); MSE -> conditional mean (safer colours, higher PSNR).
        loss = F.l1_loss if kind == "lab_ab_l1" else F.mse_loss
        return loss(ab / AB_SCALE, target / AB_SCALE)
    if kind == "lab_ab_class":
        return ab_class_loss(model, x, y)
    if kind == "unblend_aux":
        # Restoration MSE plus direct supervision of the opacity, as BCE on the logit: without it the head
        # settles in "no watermark anywhere", and through a saturated sigmoid an MSE on the opacity has no
        # gradient left (both seen: an exact identity after 500-750 steps).
        out, logit = model.predict_opacity(x)
        target = (y[:, 3:4] / MAX_OPACITY).clamp(0.0, 1.0)
        bce = F.binary_cross_entropy_with_logits(logit, target)
        # Unmarked pixels weigh clean_weight (1: plain MSE): damage to clean areas (false detections) costs more
        # than a watermark left in place, as on real photos where the mark covers a few percent of the pixels.
        w = torch.where(y[:, 3:4] > 0, torch.ones_like(target), torch.full_like(target, clean_weight))
        return (w * (out - y[:, :3]) ** 2).mean() + alpha_weight * bce
    if kind == "noise_aware":
        return noise_aware_loss(model, x, y, sigma_weight=alpha_weight)
    out = model(x)
    if kind == "charbonnier":
        return torch.sqrt((out - y) ** 2 + 1e-6).mean()
    if kind == "ink_charbonnier":
        return ink_charbonnier(out, y, ink_weight=alpha_weight)
    if kind == "l1":
        return F.l1_loss(out, y)
    if kind == "mse":
        return F.mse_loss(out, y)
    raise ValueError(f"unknown loss {kind!r}")


def ink_charbonnier(out: Tensor, y: Tensor, ink_weight: float = 0.5) -> Tensor:
    """Charbonnier over the page + ``ink_weight`` × a term over the target's ink only (y < 0.5, 8-bit < 128).

    Ink is 5–20 % of a page's pixels, so in a plain mean grey stroke centres cost little (the shipped
    doc-denoise lightens heavy strokes by up to 45 grey levels); averaged over the ink pixels alone the strokes
    weigh as much as the whole page, and the one-sided term makes lightening ink cost twice as much as
    darkening it.
    """
    err = torch.sqrt((out - y) ** 2 + 1e-6)
    ink = (y < 0.5).to(err.dtype)
    ink_term = (ink * (err + F.relu(out - y))).sum() / ink.sum().clamp(min=1.0)
    return err.mean() + ink_weight * ink_term


def ab_class_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Zhang et al. 2016: cross-entropy of the class head's logits against the soft-encoded true ab (its 5 nearest
    bin centres, Gaussian σ = 5), each pixel weighted by the rarity of its colour (the 4th target channel that
    ``ColorizeTask(rebalance=λ)`` adds; unweighted without it). At the head's resolution: the true ab and the
    weights are average-pooled to it. Unlike an L1/L2 regression on ab, uncertain pixels keep a multimodal
    distribution instead of collapsing to the mean of their colours (sepia)."""
    assert isinstance(model, Colorizer) and model.class_head is not None
    logits, _ = model.predict_logits(x)
    f = y.shape[-1] // logits.shape[-1]
    with torch.autocast(y.device.type, enabled=False):  # targets in fp32 under the legs' bf16 autocast
        ab = F.avg_pool2d(rgb_to_lab(y[:, :3].float())[:, 1:], f)
        idx, weight = soft_encode(ab, model.centres())
        ce = -(weight * F.log_softmax(logits.float(), 1).gather(1, idx)).sum(1, keepdim=True)
        if y.shape[1] > 3:
            ce = ce * F.avg_pool2d(y[:, 3:4].float(), f)
    return ce.mean()


def noise_aware_loss(model: nn.Module, x: Tensor, y: Tensor, sigma_weight: float = 0.5) -> Tensor:
    """Mean per-patch PSNR (negated) of the restoration + an asymmetric error of the estimated noise level.

    Per-patch log-MSE rather than one MSE over the batch: a batch MSE is dominated by the noisiest
    patches, so low-noise and clean patches (most real photos) barely count and come out over-smoothed;
    the eval's figure is PSNR per σ. The 1e-5 floor caps a patch's weight at 50 dB.
    Under-estimating σ costs twice over-estimating it: a non-blind denoiser given too low a level leaves
    noise in, given too high a level it only smooths a little more (CBDNet's asymmetric loss).
    """
    assert isinstance(model, NoiseAwareDenoiser)
    out, est = model.predict_with_sigma(x)
    clean, level = y[:, :3], y[:, 3:4]
    mse = ((out.float() - clean) ** 2).mean((1, 2, 3))
    restore = 10.0 * torch.log10(mse + 1e-5).mean()
    err = (est.float() - F.avg_pool2d(level, 2)) * (255.0 / 10.0)  # in units of 10 grey levels
    sigma = torch.where(err < 0, -2.0 * err, err).mean()
    return restore + sigma_weight * sigma


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
        loss = compute_loss(model, x, y, cfg.optim.loss, cfg.optim.clean_weight, cfg.optim.alpha_weight)
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
