"""Sparse objectives: KL(ρ‖ρ̂ⱼ) on a sigmoid code, and L1 on a ReLU code."""

from __future__ import annotations

from training.family import metrics
from training.family.members import KL_RHO


def test_kl_sparsity_drives_mean_activation_to_rho(trained, glyphs) -> None:
    sparse = trained("sparse_kl").model
    plain = trained("dense_sigmoid").model  # same net, same training, no penalty
    sparse_mean = metrics.mean_activation(sparse, glyphs.test)
    plain_mean = metrics.mean_activation(plain, glyphs.test)
    assert abs(sparse_mean - KL_RHO) < 0.02, sparse_mean
    assert abs(plain_mean - KL_RHO) > 0.2, plain_mean
    # Per unit too: every ρ̂ⱼ is near ρ, not just their average.
    per_unit = metrics.unit_mean_activations(sparse, glyphs.test)
    assert (per_unit - KL_RHO).abs().max() < 0.06, per_unit
    # Sparse but still a working autoencoder.
    assert metrics.reconstruction_mse(sparse, glyphs.test) < metrics.mean_image_mse(glyphs.train, glyphs.test)


def test_l1_sparsity_shrinks_activations(trained, glyphs) -> None:
    sparse = metrics.mean_activation(trained("sparse_l1").model, glyphs.test)
    plain = metrics.mean_activation(trained("dense").model, glyphs.test)
    assert sparse < 0.7 * plain, (sparse, plain)
