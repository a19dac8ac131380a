"""Demo figures for trained family members, written as small PNGs."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from training.family import images
from training.family.members import make_corruption
from training.family.run import Trained
from training.nets.vae import DenseVAE


@torch.no_grad()
def reconstructions(trained: dict[str, Trained], test: Tensor, path: Path, n: int = 12) -> Path:
    """Test originals, then each member's reconstruction of them, one row per member."""
    x = test[:n]
    rows = [("original", x)] + [(name, t.model.eval()(x)) for name, t in trained.items()]
    return images.save(images.labelled_rows(rows), path)


@torch.no_grad()
def denoising(trained: dict[str, Trained], test: Tensor, noise: str, path: Path, n: int = 12) -> Path:
    """Noisy inputs, each member's output on them, and the clean targets."""
    x = test[:n]
    noisy = make_corruption(noise, torch.Generator().manual_seed(7))(x)
    rows = [(f"noisy ({noise})", noisy)]
    rows += [(name, trained[name].model.eval()(noisy)) for name in ("dense", "denoising") if name in trained]
    rows.append(("clean", x))
    return images.save(images.labelled_rows(rows), path)


def vae_samples(vae: DenseVAE, path: Path, n: int = 64, seed: int = 0) -> Path:
    """Decodings of ``z ~ N(0, I)``."""
    samples = vae.eval().sample(n, generator=torch.Generator().manual_seed(seed))
    return images.save(images.grid(samples, columns=8), path)


def vae_interpolation(vae: DenseVAE, test: Tensor, path: Path, pairs: int = 4, steps: int = 10) -> Path:
    """Rows of latent interpolations between test images ``2k`` and ``2k + 1``."""
    vae.eval()
    rows = [(f"pair {k}", vae.interpolate(test[2 * k], test[2 * k + 1], steps)) for k in range(pairs)]
    return images.save(images.labelled_rows(rows), path)
