"""Contractive objective ‖x − x̂‖² + λ‖∂h/∂x‖²_F lowers the encoder's Jacobian norm."""

from __future__ import annotations

from training.family import metrics


def test_contractive_penalty_lowers_jacobian_norm(trained, glyphs) -> None:
    x = glyphs.test[:128]
    contractive = metrics.jacobian_frobenius(trained("contractive").model, x)
    plain = metrics.jacobian_frobenius(trained("dense").model, x)
    assert contractive < 0.5 * plain, (contractive, plain)


def test_contractive_model_still_reconstructs(trained, glyphs) -> None:
    mse = metrics.reconstruction_mse(trained("contractive").model, glyphs.test)
    assert mse < 0.7 * metrics.mean_image_mse(glyphs.train, glyphs.test)


def test_contractive_history_logs_the_penalty(trained) -> None:
    epochs = trained("contractive").history.epochs
    assert {"reconstruction", "contractive", "total"} <= set(epochs[0])
    assert epochs[-1]["contractive"] < epochs[0]["contractive"]
