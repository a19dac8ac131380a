"""Shared fixtures for the training tests.

Autoencoder family: one small, seeded glyph split and a cache of trained members, so each
member is trained once per session however many tests inspect it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from training.data.glyphs import GlyphSplit, load_glyphs
from training.family.members import family
from training.family.run import Trained, train_member

# 2 CPU cores are shared; one thread keeps timings predictable.
torch.set_num_threads(1)

FAMILY_TRAIN = 2000
FAMILY_TEST = 300
FAMILY_EPOCHS = 40


@pytest.fixture(scope="session")
def glyphs() -> GlyphSplit:
    return load_glyphs("both", seed=0, max_train=FAMILY_TRAIN, max_test=FAMILY_TEST)


@pytest.fixture(scope="session")
def trained(glyphs: GlyphSplit) -> Callable[..., Trained]:
    """``trained(name, noise=None)``: that member after the same seeded training as every other.

    ``noise`` overrides the denoising member's corruption (e.g. ``"masking:0.5"``).
    """
    cache: dict[tuple[str, str | None], Trained] = {}

    def get(name: str, noise: str | None = None) -> Trained:
        key = (name, noise)
        if key not in cache:
            member = (family(noise) if noise else family())[name]
            cache[key] = train_member(member, glyphs.train, FAMILY_EPOCHS, seed=0)
        return cache[key]

    return get
