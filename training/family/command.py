"""`python -m training.family --out DIR`: train every member, write report and figures."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from training.data.glyphs import load_glyphs
from training.family import demos, metrics, report
from training.family.members import DENOISE_SIGMA, KL_RHO, family
from training.family.run import Trained, evaluate, train_member
from training.nets.vae import DenseVAE


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.family", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("training/results/family"))
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--source", choices=("digits", "fonts", "both"), default="both")
    p.add_argument("--noise", default=f"gaussian:{DENOISE_SIGMA}", help="gaussian:SIGMA or masking:P")
    p.add_argument("--max-train", type=int, default=None, help="cap the training set (quick runs)")
    p.add_argument("--max-test", type=int, default=None)
    p.add_argument("--members", nargs="*", default=None, help="subset of members (default: all)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for these small nets)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    split = load_glyphs(args.source, seed=args.seed, max_train=args.max_train, max_test=args.max_test)
    members = family(args.noise)
    names = args.members or list(members)
    unknown = set(names) - set(members)
    if unknown:
        raise SystemExit(f"unknown members: {sorted(unknown)}; choose from {sorted(members)}")

    trained: dict[str, Trained] = {}
    results: dict[str, Any] = {
        "config": {
            "source": args.source,
            "n_train": len(split.train),
            "n_test": len(split.test),
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "noise": args.noise,
            "kl_rho": KL_RHO,
        },
        "baseline": {"test_mse": metrics.mean_image_mse(split.train, split.test)},
        "members": {},
    }
    for name in names:
        start = time.perf_counter()
        trained[name] = train_member(members[name], split.train, args.epochs, args.seed, args.batch_size)
        row = evaluate(trained[name], split, args.noise, args.seed)
        results["members"][name] = {
            "summary": members[name].summary,
            **row,
            "train_loss_per_epoch": trained[name].history.series(),
            "train_seconds": round(time.perf_counter() - start, 2),
        }
        print(f"{name:>14}: test MSE {row['test_mse']:.4f} ({time.perf_counter() - start:.1f}s)", flush=True)

    out: Path = args.out
    demos.reconstructions(trained, split.test, out / "reconstructions.png")
    demos.denoising(trained, split.test, args.noise, out / "denoising.png")
    vae = trained.get("vae")
    if vae is not None and isinstance(vae.model, DenseVAE):
        demos.vae_samples(vae.model, out / "vae_samples.png", seed=args.seed)
        demos.vae_interpolation(vae.model, split.test, out / "vae_interpolation.png")
    md_path, _ = report.write(results, out)
    print(f"wrote {md_path} and figures in {out}")
    return results


if __name__ == "__main__":
    main()
