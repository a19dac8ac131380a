"""Denoising objective ‖x − g(f(x + w))‖²: beats the plain model on noisy inputs."""

from __future__ import annotations

import torch

from training.family import metrics
from training.family.members import DENOISE_SIGMA, family, make_corruption
from training.objectives import GaussianCorruption, MaskingCorruption


def test_denoising_beats_plain_model_on_noisy_inputs(trained, glyphs) -> None:
    noise = make_corruption(f"gaussian:{DENOISE_SIGMA}", torch.Generator().manual_seed(123))
    noisy = noise(glyphs.test)
    plain_model, denoising_model = trained("dense").model, trained("denoising").model
    plain = metrics.reconstruction_mse(plain_model, glyphs.test, noisy)
    denoising = metrics.reconstruction_mse(denoising_model, glyphs.test, noisy)
    assert denoising < 0.8 * plain, (denoising, plain)
    # The win is robustness to noise, not just a better fit: noise costs it far less.
    plain_cost = plain - metrics.reconstruction_mse(plain_model, glyphs.test)
    denoising_cost = denoising - metrics.reconstruction_mse(denoising_model, glyphs.test)
    assert denoising_cost < 0.7 * plain_cost, (denoising_cost, plain_cost)
    # ...and it really removes noise: its output is closer to the clean image than its input.
    assert denoising < 0.5 * float((noisy - glyphs.test).pow(2).mean())


def test_noise_is_configurable(glyphs) -> None:
    assert isinstance(make_corruption("gaussian:0.5"), GaussianCorruption)
    assert make_corruption("gaussian:0.5").sigma == 0.5
    assert isinstance(make_corruption("masking:0.4"), MaskingCorruption)
    member = family("masking:0.4")["denoising"]
    objective = member.objective(torch.Generator().manual_seed(0))
    assert isinstance(objective.corruption, MaskingCorruption) and objective.corruption.p == 0.4


def test_masking_denoiser_fills_holes_better_than_plain(trained, glyphs) -> None:
    masking = trained("denoising", noise="masking:0.5")
    holes = MaskingCorruption(p=0.5, generator=torch.Generator().manual_seed(5))(glyphs.test)
    plain = metrics.reconstruction_mse(trained("dense").model, glyphs.test, holes)
    filled = metrics.reconstruction_mse(masking.model, glyphs.test, holes)
    assert filled < 0.8 * plain, (filled, plain)
