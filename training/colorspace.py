"""``python -m training.colorspace [--steps N]``: Lab-vs-RGB comparison that chose the colorizer's space.

Two short runs with the same small network, data stream, seed and steps: (a) predict Lab ab from L with an
L1 loss on ab, (b) predict sRGB directly (residual on the replicated gray) with an L1 loss on RGB. Both are
scored on the held-out photos (PSNR, SSIM, colourfulness). Writes ``training/results/colorspace.md/.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from .config import RUNS_DIR, OptimConfig, TrainConfig
from .evalsets import eval_photos, luma601
from .metrics import colourfulness, psnr, ssim
from .train import load_trained, train

RESULTS = Path(__file__).resolve().parent / "results"
NET = {"widths": [16, 32, 64, 128], "convs_per_block": 2, "unshuffle": True}


def config(space: str, steps: int) -> TrainConfig:
    return TrainConfig(
        name=f"colorspace-{space}", kind="colorize", seed=5,
        net={**NET, "space": space}, data={"crop": 128, "batch_size": 12},
        optim=OptimConfig(lr=2e-3, warmup_steps=100, steps=steps, loss="lab_ab_l1" if space == "lab" else "l1"),
        checkpoint_every=max(100, steps // 4), validate_every=steps, threads=1,
    )


@torch.no_grad()
def score(model: torch.nn.Module) -> dict[str, float]:
    rows = []
    for rgb in eval_photos().values():
        gray = torch.from_numpy(luma601(rgb))[None, None]
        out = model(gray)[0].permute(1, 2, 0).numpy()
        rows.append((psnr(out, rgb), ssim(out, rgb), colourfulness(out), colourfulness(rgb)))
    a = np.asarray(rows)
    return {"psnr": float(a[:, 0].mean()), "ssim": float(a[:, 1].mean()), "colourfulness": float(a[:, 2].mean()),
            "original_colourfulness": float(a[:, 3].mean())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.colorspace")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    results = {}
    for space in ("lab", "rgb"):
        cfg = config(space, args.steps)
        path = train(cfg, run_dir=RUNS_DIR / cfg.name, progress=False)
        model, blob = load_trained(path)
        results[space] = {**score(model), "train_seconds": blob["wall_seconds"]}
        print(space, results[space], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "colorspace.json").write_text(json.dumps({"steps": args.steps, "net": NET, "results": results}, indent=2) + "\n")
    lines = ["# Colorizer colour space: Lab (predict ab from L) vs RGB", "",
             f"Same U-Net {NET}, {args.steps} steps, batch 12 of 128² crops, seed 5; held-out photos. "
             "`python -m training.colorspace`.", "",
             "| space | PSNR dB | SSIM | colourfulness | (originals) | train s |", "|---|---|---|---|---|---|"]
    for space, r in results.items():
        lines.append(f"| {space} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['colourfulness']:.2f} | "
                     f"{r['original_colourfulness']:.2f} | {r['train_seconds']} |")
    (args.out / "colorspace.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
