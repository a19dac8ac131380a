"""Unit tests of training.objectives: each term's value, gradients and the objective's plumbing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.nets.dense import DenseAutoencoder
from training.nets.vae import GaussianCode
from training.objectives import (
    Contractive,
    GaussianCorruption,
    KLDivergence,
    KLSparsity,
    L1Sparsity,
    MaskingCorruption,
    Objective,
    OpacityBCE,
    Reconstruction,
    jacobian_sq_norm_estimate,
    jacobian_sq_norm_exact,
)

torch.set_num_threads(1)


class FixedCode(nn.Module):
    """Returns a preset output and code, recording what it was fed."""

    def __init__(self, output: Tensor, code: object) -> None:
        super().__init__()
        self.output, self.code = output, code
        self.seen: Tensor | None = None

    def forward_with_code(self, x: Tensor) -> tuple[Tensor, object]:
        self.seen = x
        return self.output, self.code


class TinyConvAE(nn.Module):
    """A conv encoder with no closed-form Jacobian (for the random-projection estimate)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(1, 3, 3, stride=2, padding=1)
        self.dec = nn.ConvTranspose2d(3, 1, 4, stride=2, padding=1)

    def forward_with_code(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.tanh(self.enc(x))
        return torch.sigmoid(self.dec(h)), h


def _ctx_loss(term, output: Tensor, clean: Tensor, code: object) -> Tensor:
    loss, _ = Objective([term])(FixedCode(output, code), clean)
    return loss


# ------------------------------------------------------------------ watermark opacity


def test_opacity_bce_weighs_marked_pixels_by_marked_weight() -> None:
    """Class balance for the watermark head: a marked pixel's BCE counts ``marked_weight`` times an unmarked one's,
    so an under-read faint mark costs as much as the many unmarked pixels around it pull the other way."""
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 8, 8)
    opacity = torch.rand(2, 1, 8, 8) * 0.8 * (torch.rand(2, 1, 8, 8) < 0.2)  # ~20 % marked
    clean = torch.cat([torch.rand(2, 3, 8, 8), opacity], 1)
    per_pixel = F.binary_cross_entropy_with_logits(logits, opacity / 0.8, reduction="none")
    marked = opacity > 0
    expected = 0.5 * (4.0 * per_pixel[marked].sum() + per_pixel[~marked].sum()) / per_pixel.numel()
    got = _ctx_loss(OpacityBCE(weight=0.5, marked_weight=4.0), clean[:, :3], clean, logits)
    assert torch.allclose(got, expected, rtol=1e-5)
    plain = _ctx_loss(OpacityBCE(weight=0.5), clean[:, :3], clean, logits)  # the default: every pixel alike
    assert torch.allclose(plain, 0.5 * per_pixel.mean(), rtol=1e-5)
    assert got > plain * 1.5


def test_watermark_v4_is_v3_with_class_balanced_opacity() -> None:
    """watermark-v4 changes one thing against v3 (data, net, restoration loss, seed alike), so its leg tested that
    one change (it lost on every figure; legs went on from v3); its opacity term is the class-balanced one."""
    from training.config import CONFIG_DIR, TrainConfig
    from training.objectives import objective_for

    v3, v4 = (TrainConfig.load(CONFIG_DIR / f"watermark-{v}.json") for v in ("v3", "v4"))
    assert (v4.net, v4.data, v4.seed, v4.tiling) == (v3.net, v3.data, v3.seed, v3.tiling)
    assert v3.optim.marked_weight == 1.0 and v4.optim.marked_weight == 4.0
    assert {k: v for k, v in vars(v4.optim).items() if k != "marked_weight"} == \
        {k: v for k, v in vars(v3.optim).items() if k != "marked_weight"}
    terms = {t.name: t for t in objective_for(v4.optim).terms}
    assert terms["opacity_bce"].marked_weight == 4.0 and terms["restoration"].clean_weight == 4.0


def test_watermark_legs_train_v5_which_is_v3_with_marks_laid_out_on_whole_images() -> None:
    """v5 changes one thing against v3 (net, loss, seed, the rest of the data alike): the marks are laid out on a
    whole image of eval-photo size and the patch is a window of it."""
    from training.builders import build_task
    from training.config import CONFIG_DIR, LEG_CONFIGS, TrainConfig

    assert LEG_CONFIGS["watermark"] == "watermark-v5"
    v3, v5 = (TrainConfig.load(CONFIG_DIR / f"watermark-{v}.json") for v in ("v3", "v5"))
    assert (v5.net, v5.optim, v5.seed, v5.tiling) == (v3.net, v3.optim, v3.seed, v3.tiling)
    assert {k: v for k, v in v5.data.items() if k != "mark_canvas"} == v3.data
    assert "mark_canvas" not in v3.data and v5.data["mark_canvas"] == 640
    photos = [np.zeros((200, 200, 3), np.uint8)]
    assert build_task(v5, photos=photos).mark_canvas == 640 and build_task(v3, photos=photos).mark_canvas == 0


# ------------------------------------------------------------------ reconstruction / L1


def test_reconstruction_mse_matches_mean_squared_error() -> None:
    torch.manual_seed(0)
    clean, out = torch.rand(4, 1, 5, 5), torch.rand(4, 1, 5, 5)
    loss = _ctx_loss(Reconstruction(weight=2.0), out, clean, torch.zeros(4, 2))
    assert torch.allclose(loss, 2.0 * F.mse_loss(out, clean))


def test_reconstruction_bce_sum_is_per_sample_total() -> None:
    torch.manual_seed(0)
    clean, out = torch.rand(4, 1, 5, 5), torch.rand(4, 1, 5, 5).clamp(0.01, 0.99)
    loss = _ctx_loss(Reconstruction(loss="bce", reduction="sum"), out, clean, torch.zeros(4, 2))
    expected = F.binary_cross_entropy(out, clean, reduction="sum") / 4
    assert torch.allclose(loss, expected)


def test_reconstruction_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        _ctx_loss(Reconstruction(), torch.rand(2, 4), torch.rand(2, 5), torch.zeros(2, 2))


def test_l1_sparsity_is_weighted_mean_abs_code() -> None:
    code = torch.tensor([[1.0, -3.0], [0.0, 4.0]])
    loss = _ctx_loss(L1Sparsity(weight=0.5), torch.zeros(2, 3), torch.zeros(2, 3), code)
    assert math.isclose(float(loss), 0.5 * 2.0)


# ------------------------------------------------------------------ KL sparsity


def _bernoulli_kl(rho: float, q: float) -> float:
    return rho * math.log(rho / q) + (1 - rho) * math.log((1 - rho) / (1 - q))


def test_kl_sparsity_matches_formula_and_vanishes_at_target() -> None:
    code = torch.tensor([[0.1, 0.3], [0.3, 0.5]])  # unit means 0.2 and 0.4
    loss = _ctx_loss(KLSparsity(rho=0.05, weight=2.0), torch.zeros(2, 1), torch.zeros(2, 1), code)
    assert math.isclose(float(loss), 2.0 * (_bernoulli_kl(0.05, 0.2) + _bernoulli_kl(0.05, 0.4)), rel_tol=1e-5)
    at_target = torch.full((8, 3), 0.05)
    assert float(_ctx_loss(KLSparsity(rho=0.05), torch.zeros(8, 1), torch.zeros(8, 1), at_target)) < 1e-6


def test_kl_sparsity_conv_unit_is_a_channel() -> None:
    code = torch.zeros(2, 2, 3, 3)
    code[:, 0] = 0.2  # channel 0 mean 0.2
    code[0, 1] = 0.6  # channel 1 mean 0.3 over batch and positions
    loss = _ctx_loss(KLSparsity(rho=0.1), torch.zeros(2, 1), torch.zeros(2, 1), code)
    assert math.isclose(float(loss), _bernoulli_kl(0.1, 0.2) + _bernoulli_kl(0.1, 0.3), rel_tol=1e-5)


def test_kl_sparsity_is_finite_at_saturation_and_rejects_unbounded_codes() -> None:
    dead = torch.zeros(4, 3, requires_grad=True)
    loss = _ctx_loss(KLSparsity(), torch.zeros(4, 1), torch.zeros(4, 1), dead)
    assert torch.isfinite(loss)
    loss.backward()
    assert dead.grad is not None and torch.isfinite(dead.grad).all()
    with pytest.raises(ValueError, match="sigmoid"):
        _ctx_loss(KLSparsity(), torch.zeros(2, 1), torch.zeros(2, 1), torch.tensor([[2.0], [0.5]]))


# ------------------------------------------------------------------ KL divergence (VAE)


def test_kl_divergence_formula_and_code_forms() -> None:
    mu = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    # per sample: -1/2 Σ (1 + logvar - mu² - exp(logvar))
    s0 = -0.5 * ((1 + 0 - 1 - 1) + (1 + math.log(2.0) - 0 - 2))
    s1 = -0.5 * ((1 - 1) + (1 - 4 - 1))
    expected = (s0 + s1) / 2
    out = torch.zeros(2, 1)
    for code in (GaussianCode(mu, mu, logvar), (mu, logvar), (mu.clone(), mu, logvar)):
        assert math.isclose(float(_ctx_loss(KLDivergence(), out, out, code)), expected, rel_tol=1e-6)
    standard = GaussianCode(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(3, 4))
    assert float(_ctx_loss(KLDivergence(), torch.zeros(3, 1), torch.zeros(3, 1), standard)) == 0.0


# ------------------------------------------------------------------ contractive


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_closed_form_jacobian_equals_autograd(activation: str) -> None:
    torch.manual_seed(0)
    model = DenseAutoencoder(code_dim=32, hidden_activation=activation)
    x = torch.rand(6, 1, 28, 28, requires_grad=True)
    _, h = model.forward_with_code(x)
    exact = jacobian_sq_norm_exact(h, x)
    closed = model.encoder_jacobian_sq_norm(x)
    assert torch.allclose(closed, exact, rtol=1e-4)
    assert (closed > 0).all()


def test_random_projection_estimate_matches_exact_on_dense_model() -> None:
    torch.manual_seed(0)
    model = DenseAutoencoder(code_dim=32, hidden_activation="sigmoid")
    x = torch.rand(8, 1, 28, 28, requires_grad=True)
    _, h = model.forward_with_code(x)
    exact = model.encoder_jacobian_sq_norm(x).detach()
    gen = torch.Generator().manual_seed(1)
    estimate = jacobian_sq_norm_estimate(h, x, n_projections=1000, generator=gen, create_graph=False)
    assert torch.allclose(estimate, exact, rtol=0.05)  # relative s.e. here is about 1.5%
    single = torch.stack([jacobian_sq_norm_estimate(h, x, 1, gen, create_graph=False) for _ in range(20)])
    assert single.std(dim=0).min() > 0  # one projection is noisy: it really is an estimate


def test_random_projection_estimate_is_unbiased_for_a_conv_model() -> None:
    torch.manual_seed(0)
    model = TinyConvAE()
    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    _, h = model.forward_with_code(x)
    exact = jacobian_sq_norm_exact(h, x, create_graph=False)
    estimate = jacobian_sq_norm_estimate(h, x, n_projections=1000, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(estimate.detach(), exact, rtol=0.05)


@pytest.mark.parametrize("method", ["closed_form", "autograd", "estimate"])
def test_contractive_penalty_trains_the_encoder(method: str) -> None:
    torch.manual_seed(0)
    model = DenseAutoencoder(code_dim=8)
    x = torch.rand(5, 1, 28, 28)
    term = Contractive(weight=1.0, method=method, generator=torch.Generator().manual_seed(0))
    loss, parts = Objective([term])(model, x)
    loss.backward()
    assert parts["contractive"] > 0
    assert model.encoder.weight.grad is not None and model.encoder.weight.grad.abs().sum() > 0
    assert model.decoder.weight.grad is None  # the penalty only involves the encoder


def test_contractive_auto_picks_closed_form_only_when_available() -> None:
    assert Contractive().resolve_method(DenseAutoencoder()) == "closed_form"
    assert Contractive().resolve_method(TinyConvAE()) == "estimate"
    loss, _ = Objective([Reconstruction(), Contractive(weight=1e-2)])(TinyConvAE(), torch.rand(2, 1, 8, 8))
    loss.backward()


def test_contractive_works_under_no_grad_evaluation() -> None:
    with torch.no_grad():
        _, parts = Objective([Contractive(weight=1.0)])(DenseAutoencoder(), torch.rand(3, 1, 28, 28))
    assert float(parts["contractive"]) > 0


# ------------------------------------------------------------------ corruptions


def test_gaussian_corruption_statistics_and_seeding() -> None:
    x = torch.full((64, 1, 28, 28), 0.5)
    noisy = GaussianCorruption(sigma=0.2, generator=torch.Generator().manual_seed(0))(x)
    noise = noisy - x
    assert abs(float(noise.mean())) < 0.005 and abs(float(noise.std()) - 0.2) < 0.005
    again = GaussianCorruption(sigma=0.2, generator=torch.Generator().manual_seed(0))(x)
    assert torch.equal(noisy, again)
    clipped = GaussianCorruption(sigma=2.0, clip=True)(x)
    assert clipped.min() >= 0 and clipped.max() <= 1
    with pytest.raises(ValueError):
        GaussianCorruption(sigma=-1.0)


def test_masking_corruption_drops_fraction_p_shared_across_channels() -> None:
    x = torch.ones(32, 3, 28, 28)
    masked = MaskingCorruption(p=0.3, generator=torch.Generator().manual_seed(0))(x)
    dropped = masked == 0
    assert abs(float(dropped.float().mean()) - 0.3) < 0.01
    assert torch.equal(dropped[:, 0], dropped[:, 1]) and torch.equal(dropped[:, 0], dropped[:, 2])
    assert set(masked.unique().tolist()) <= {0.0, 1.0}


# ------------------------------------------------------------------ objective plumbing


def test_objective_corrupts_clean_when_no_inputs_and_uses_given_inputs_otherwise() -> None:
    clean = torch.rand(4, 1, 6, 6)
    model = FixedCode(clean.clone(), torch.zeros(4, 2))
    objective = Objective([Reconstruction()], corruption=GaussianCorruption(sigma=0.5))
    objective(model, clean)
    assert model.seen is not None and not torch.equal(model.seen, clean)  # denoising: x + w
    dirty = torch.rand(4, 1, 6, 6)
    objective(model, clean, inputs=dirty)
    assert model.seen is dirty  # paired data goes in untouched


def test_objective_parts_are_detached_weighted_terms_summing_to_total() -> None:
    torch.manual_seed(0)
    model = DenseAutoencoder(hidden_activation="sigmoid")
    x = torch.rand(8, 1, 28, 28)
    objective = Objective(
        [Reconstruction(), KLSparsity(weight=0.1), L1Sparsity(weight=1e-2), Contractive(weight=1e-3)],
        corruption=MaskingCorruption(p=0.2),
    )
    loss, parts = objective(model, x)
    assert set(parts) == {"reconstruction", "kl_sparsity", "l1_sparsity", "contractive", "total"}
    assert all(not p.requires_grad and p.dim() == 0 for p in parts.values())
    terms = sum(v for k, v in parts.items() if k != "total")
    assert torch.allclose(terms, parts["total"]) and torch.allclose(loss.detach(), parts["total"])
    loss.backward()


def test_objective_rejects_duplicate_names_and_empty() -> None:
    with pytest.raises(ValueError):
        Objective([Reconstruction(), Reconstruction()])
    with pytest.raises(ValueError):
        Objective([])
    Objective([Reconstruction(), Reconstruction(loss="bce", name="bce")])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_generators_seed_gpu_training() -> None:
    gen = torch.Generator().manual_seed(0)
    model = DenseAutoencoder(hidden_activation="sigmoid").cuda()
    objective = Objective(
        [Reconstruction(), KLSparsity(weight=0.1), Contractive(weight=1e-3, method="estimate", generator=gen)],
        corruption=GaussianCorruption(sigma=0.1, generator=gen),
    )
    loss, _ = objective(model, torch.rand(4, 1, 28, 28, device="cuda"))
    loss.backward()
    assert torch.isfinite(loss)
