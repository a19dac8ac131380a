"""Variational autoencoder: reparameterised sampling, ELBO, prior samples, interpolation."""

from __future__ import annotations

import math

import torch

from training.family import metrics
from training.family.members import family
from training.nets.vae import DenseVAE
from training.objectives import KLDivergence, Objective


def test_kl_term_is_finite_and_positive(trained, glyphs) -> None:
    vae = trained("vae").model
    vae.eval()
    _, parts = Objective([KLDivergence()])(vae, glyphs.test)
    kl = float(parts["kl_divergence"])
    assert math.isfinite(kl) and kl > 1.0  # the latent is used, not collapsed onto the prior


def test_elbo_improves_over_training(trained, glyphs) -> None:
    torch.manual_seed(0)
    untrained = family()["vae"].build()  # same seed and init as the trained member
    before = metrics.negative_elbo(untrained, glyphs.test)
    after = metrics.negative_elbo(trained("vae").model, glyphs.test)
    assert math.isfinite(after) and after < 0.6 * before, (before, after)
    losses = trained("vae").history.series()
    assert losses[-1] < losses[0]


def test_prior_samples_decode_to_data_range(trained, glyphs) -> None:
    vae = trained("vae").model
    samples = vae.sample(64, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (64, 1, 28, 28)
    assert torch.isfinite(samples).all() and samples.min() >= 0 and samples.max() <= 1
    # They look like the data in bulk (ink coverage), and differ from one another.
    assert abs(float(samples.mean()) - float(glyphs.test.mean())) < 0.05
    assert float(samples.std(dim=0).mean()) > 0.05


def test_interpolation_runs_between_the_two_inputs(trained, glyphs) -> None:
    vae = trained("vae").model
    vae.eval()
    a, b = glyphs.test[0], glyphs.test[1]
    strip = vae.interpolate(a, b, steps=7)
    assert strip.shape == (7, 1, 28, 28)
    ends = vae(torch.stack([a, b]))  # eval mode: decoded posterior means
    assert torch.allclose(strip[0], ends[0], atol=1e-5) and torch.allclose(strip[-1], ends[1], atol=1e-5)
    # Moving along the line moves steadily from a's reconstruction to b's.
    dist_to_b = (strip - ends[1]).pow(2).flatten(1).mean(dim=1)
    assert dist_to_b[0] > dist_to_b[3] > dist_to_b[-1]


def test_reparameterisation_samples_in_training_and_is_differentiable() -> None:
    torch.manual_seed(0)
    vae = DenseVAE(hidden=32, latent_dim=4)
    x = torch.rand(3, 1, 28, 28)
    vae.train()
    (out1, code1), (out2, _) = vae.forward_with_code(x), vae.forward_with_code(x)
    assert not torch.equal(out1, out2)
    code1.z.sum().backward()
    assert vae.to_logvar.weight.grad is not None and vae.to_logvar.weight.grad.abs().sum() > 0
    vae.eval()
    assert torch.equal(vae(x), vae(x))
