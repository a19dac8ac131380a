"""``python -m training.ablation [--steps N]``: objectives ablation on document denoising.

Trains the same small U-Net for the same number of steps (same data stream, same seed, same optimizer) under
each objective from ``training.objectives`` and evaluates RMSE/PSNR on the held-out evaluation pages:

* plain            — reconstruct the clean page from itself (a classic autoencoder; never sees dirt);
* denoising (gauss)— reconstruct the clean page from clean + Gaussian noise σ=0.1 (a classic DAE);
* denoising (pairs)— reconstruct the clean page from the dirty page (paired synthetic data);
* + sparse         — denoising (pairs) + L1 sparsity of the bottleneck code;
* + contractive    — denoising (pairs) + contractive penalty ‖∂code/∂x‖²_F (random-projection estimate).

Writes ``training/results/ablation.md`` and ``ablation.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .data.tasks import DocDenoiseTask
from .evalsets import eval_pages
from .metrics import psnr, rmse
from .nets.unet import UNet, UNetConfig, count_parameters
from .objectives import Contractive, GaussianCorruption, L1Sparsity, Objective, Reconstruction

RESULTS = Path(__file__).resolve().parent / "results"
SMALL_NET = dict(widths=[8, 16, 32], convs_per_block=1, unshuffle=True, residual=True, out_activation="clamp")


def objectives(seed: int) -> dict[str, tuple[Objective, bool]]:
    """name -> (objective, paired): paired objectives get the dirty page as input."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "plain": (Objective([Reconstruction()]), False),
        "denoising (gauss σ=0.1)": (Objective([Reconstruction()], corruption=GaussianCorruption(0.1, clip=True, generator=gen)), False),
        "denoising (pairs)": (Objective([Reconstruction()]), True),
        "denoising (pairs) + L1 sparse": (Objective([Reconstruction(), L1Sparsity(weight=1e-3)]), True),
        "denoising (pairs) + contractive": (Objective([Reconstruction(), Contractive(weight=1e-4, generator=gen)]), True),
    }


@torch.no_grad()
def evaluate(model: UNet, pages: list) -> dict[str, float]:
    model.eval()
    outs = [model(torch.from_numpy(p.dirty)[None, None]).numpy()[0, 0] for p in pages]
    model.train()
    return {"rmse": float(np.mean([rmse(o, p.clean) for o, p in zip(outs, pages)])),
            "psnr": float(np.mean([psnr(o, p.clean) for o, p in zip(outs, pages)]))}


def run(steps: int, seed: int = 0, n_pages: int = 4, log: Callable[[str], None] = print,
        only: list[str] | None = None) -> dict[str, dict[str, float]]:
    torch.set_num_threads(1)
    task = DocDenoiseTask(seed=seed, crop=128, batch_size=8, pages=24)
    batches = [task.batch(s) for s in range(min(steps, 2000))]  # identical stream for every objective
    pages = eval_pages(n_pages)
    results: dict[str, dict[str, float]] = {}
    for name, (objective, paired) in objectives(seed).items():
        if only and name not in only:
            continue
        torch.manual_seed(seed)
        model = UNet(UNetConfig(**SMALL_NET))
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=1e-5)
        t = time.perf_counter()
        parts: dict[str, torch.Tensor] = {}
        for step in range(steps):
            dirty, clean = batches[step % len(batches)]
            loss, parts = objective(model, clean, inputs=dirty if paired else None)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        res = evaluate(model, pages)
        res["train_seconds"] = round(time.perf_counter() - t, 1)
        res["final_terms"] = {k: float(v) for k, v in parts.items()}
        results[name] = res
        log(f"{name}: RMSE {res['rmse']:.4f}, PSNR {res['psnr']:.2f} dB ({res['train_seconds']} s)")
    noisy = {"rmse": float(np.mean([rmse(p.dirty, p.clean) for p in pages])),
             "psnr": float(np.mean([psnr(p.dirty, p.clean) for p in pages]))}
    results["(noisy input)"] = noisy
    return results


def to_markdown(results: dict[str, dict], steps: int) -> str:
    params = count_parameters(UNet(UNetConfig(**SMALL_NET)))
    lines = ["# Objective ablation: document denoising", "",
             f"Small residual U-Net ({params:,} parameters, widths {SMALL_NET['widths']}, pixel-unshuffle), "
             f"{steps} Adam steps each on identical batches (8 crops of 128², seed 0), cosine LR 2e-3; "
             "evaluated on the held-out evaluation pages (evaluation fonts). `python -m training.ablation`.", "",
             "| objective | RMSE ↓ | PSNR dB ↑ | train s |", "|---|---|---|---|"]
    for k, r in results.items():
        lines.append(f"| {k} | {r['rmse']:.4f} | {r['psnr']:.2f} | {r.get('train_seconds', '')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.ablation")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    results = run(args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ablation.json").write_text(json.dumps({"steps": args.steps, "net": SMALL_NET, "results": results}, indent=2) + "\n")
    (args.out / "ablation.md").write_text(to_markdown(results, args.steps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
