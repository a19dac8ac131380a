"""The dense bottleneck autoencoder (784 → 32 ReLU → 784 sigmoid, MSE) and its data."""

from __future__ import annotations

import torch

from training.data.glyphs import load_glyphs
from training.family import metrics
from training.nets.dense import DenseAutoencoder


def test_glyphs_are_28x28_in_unit_range_and_deterministic(glyphs) -> None:
    assert glyphs.train.shape[1:] == (1, 28, 28) and glyphs.test.shape[1:] == (1, 28, 28)
    assert glyphs.train.min() >= 0 and glyphs.train.max() <= 1
    assert glyphs.train.flatten(1).amax(dim=1).min() > 0.5  # no blank images
    again = load_glyphs("both", seed=0, max_train=len(glyphs.train), max_test=len(glyphs.test))
    assert torch.equal(again.train, glyphs.train) and torch.equal(again.test, glyphs.test)
    other = load_glyphs("both", seed=1, max_train=50)
    assert not torch.equal(other.train, glyphs.train[:50])


def test_bottleneck_is_32_dimensional(trained, glyphs) -> None:
    model = trained("dense").model
    assert isinstance(model, DenseAutoencoder)
    x = glyphs.test[:10]
    out, code = model.forward_with_code(x)
    assert code.shape == (10, 32) and out.shape == x.shape
    # Everything the decoder knows comes through those 32 numbers.
    assert torch.allclose(model.decode(model.encode(x)), out)
    assert model.encoder.weight.shape == (32, 784) and model.decoder.weight.shape == (784, 32)
    params = sum(p.numel() for p in model.parameters())
    assert params == 784 * 32 + 32 + 32 * 784 + 784
    assert out.min() >= 0 and out.max() <= 1


def test_reconstruction_beats_mean_image_baseline(trained, glyphs) -> None:
    t = trained("dense")
    mse = metrics.reconstruction_mse(t.model, glyphs.test)
    baseline = metrics.mean_image_mse(glyphs.train, glyphs.test)
    assert mse < 0.5 * baseline, (mse, baseline)
    losses = t.history.series()
    assert losses[-1] < 0.5 * losses[0]


def test_untrained_model_does_not_beat_the_baseline(glyphs) -> None:
    # Shows the baseline comparison above is a real bar, not one any model clears.
    torch.manual_seed(0)
    mse = metrics.reconstruction_mse(DenseAutoencoder(), glyphs.test)
    assert mse > metrics.mean_image_mse(glyphs.train, glyphs.test)
