"""Composable training objectives: the autoencoder family's and the production models' (one registry).

An :class:`Objective` is a weighted sum of :class:`Term` objects plus an optional input
corruption.  Every model it trains exposes ``forward_with_code(x) -> (output, code)``:

* ``code`` is a tensor (dense ``(N, D)`` or convolutional ``(N, C, H, W)``) for ordinary
  autoencoders;
* for a VAE it is an object with ``.mu`` and ``.logvar`` attributes (e.g. a NamedTuple
  ``(z, mu, logvar)``), or a plain tuple ``(mu, logvar)`` / ``(z, mu, logvar)``.  Terms that
  need a single tensor code (sparsity, contractive) then use ``mu``, the deterministic
  encoding.

``loss, parts = objective(model, clean, inputs=None)``: with ``inputs=None`` the corruption
(if any) is applied to ``clean`` to make the model's input, giving the denoising objective
``‖x − g(f(x + w))‖²``; otherwise ``inputs`` is used as given (paired data such as
dirty → clean pages).  ``parts`` maps each term's name, and ``"total"``, to a detached 0-d
tensor so that logging never keeps the graph alive.

The production models train through the same machinery: :data:`OBJECTIVES` maps each ``optim.loss`` name of
``training/configs/`` to its objective, and :func:`objective_for` is what the training loops ask.  Their
batches are paired (``objective(model, clean=targets, inputs=inputs)``; targets may carry a 4th channel: the
true opacity, noise level or class weight), and the heads with an auxiliary output are run through their own
``forward`` (e.g. the watermark remover's ``(restored, opacity logit)``), whose second value the terms then
see as ``code``.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, cast, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import OptimConfig
from .nets.ab_bins import soft_encode
from .nets.color import rgb_to_lab
from .nets.colorizer import AB_SCALE, Colorizer
from .nets.noise_aware import NoiseAwareDenoiser
from .nets.unet import MAX_OPACITY, UNet

__all__ = [
    "OBJECTIVES",
    "AbClassCrossEntropy",
    "Charbonnier",
    "CodedModel",
    "Contractive",
    "Corruption",
    "Forward",
    "GaussianCorruption",
    "HasExactJacobian",
    "InkStrokes",
    "KLDivergence",
    "KLSparsity",
    "L1Sparsity",
    "LabChroma",
    "MarkWeightedMSE",
    "MaskingCorruption",
    "NoiseLevelError",
    "Objective",
    "OpacityBCE",
    "PatchLogMSE",
    "Reconstruction",
    "Term",
    "TermContext",
    "ab_class_logits",
    "code_tensor",
    "denoised_and_noise_level",
    "forward_with_code",
    "gaussian_params",
    "jacobian_sq_norm_estimate",
    "jacobian_sq_norm_exact",
    "lab_chroma",
    "objective_for",
    "restored_and_opacity_logit",
]


# --------------------------------------------------------------------------- protocols


class CodedModel(Protocol):
    """What an :class:`Objective` trains: a model that also returns its code."""

    def forward_with_code(self, x: Tensor) -> tuple[Tensor, Any]: ...


def forward_with_code(model: nn.Module, x: Tensor) -> tuple[Tensor, Any]:
    """``model.forward_with_code(x)``, typed (``nn.Module`` attributes are untyped)."""
    return cast(CodedModel, model).forward_with_code(x)


# How an objective runs the model: ``(output, code)``, the code being whatever second value the terms read.
Forward = Callable[[nn.Module, Tensor], tuple[Tensor, Any]]


@runtime_checkable
class HasExactJacobian(Protocol):
    """A model that knows the closed form of its encoder's Jacobian norm.

    ``encoder_jacobian_sq_norm(x)`` returns ``‖∂h/∂x‖²_F`` per sample, shape ``(N,)``,
    differentiable with respect to the model's parameters.
    """

    def encoder_jacobian_sq_norm(self, x: Tensor) -> Tensor: ...


# --------------------------------------------------------------------------- corruptions


class Corruption(Protocol):
    """Maps a clean batch to a corrupted model input of the same shape."""

    def __call__(self, x: Tensor) -> Tensor: ...


def _noise_like(x: Tensor, generator: torch.Generator | None, uniform: bool) -> Tensor:
    # torch.randn_like takes no generator; build the tensor explicitly so runs can be seeded.
    draw = torch.rand if uniform else torch.randn
    if generator is not None and generator.device != x.device:
        # A CPU generator seeding GPU training: draw where the generator lives, then move.
        return draw(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
    return draw(x.shape, generator=generator, device=x.device, dtype=x.dtype)


@dataclass
class GaussianCorruption:
    """Additive white noise ``x + w``, ``w ~ N(0, sigma² I)``.

    ``clip=True`` clamps the result to [0, 1] (images stay in the data range); the default
    leaves it unclipped, which is the textbook denoising objective.
    """

    sigma: float = 0.1
    clip: bool = False
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        if self.sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma}")

    def __call__(self, x: Tensor) -> Tensor:
        noisy = x + self.sigma * _noise_like(x, self.generator, uniform=False)
        return noisy.clamp(0.0, 1.0) if self.clip else noisy


@dataclass
class MaskingCorruption:
    """Masking noise: each pixel is replaced by ``fill`` with probability ``p``.

    For ``(N, C, H, W)`` batches the mask is shared across channels (``shared_channels``), so a
    dropped pixel loses all its colour components, as a real defect would.
    """

    p: float = 0.25
    fill: float = 0.0
    shared_channels: bool = True
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.p < 1.0:
            raise ValueError(f"p must be in [0, 1), got {self.p}")

    def __call__(self, x: Tensor) -> Tensor:
        probe = x[:, :1] if (self.shared_channels and x.dim() == 4) else x
        drop = _noise_like(probe, self.generator, uniform=True) < self.p
        return torch.where(drop, torch.full_like(x, self.fill), x)


# --------------------------------------------------------------------------- code helpers


def gaussian_params(code: Any) -> tuple[Tensor, Tensor]:
    """``(mu, logvar)`` of a VAE code (attributes, or a 2-/3-tuple as documented above)."""
    if hasattr(code, "mu") and hasattr(code, "logvar"):
        return code.mu, code.logvar
    if isinstance(code, tuple) and len(code) == 2:
        return code[0], code[1]
    if isinstance(code, tuple) and len(code) == 3:
        return code[1], code[2]
    raise TypeError(
        "expected a Gaussian code with .mu/.logvar or a (mu, logvar) / (z, mu, logvar) tuple, "
        f"got {type(code).__name__}"
    )


def code_tensor(code: Any) -> Tensor:
    """The single tensor a code-based penalty acts on (``mu`` for a Gaussian code)."""
    if isinstance(code, Tensor):
        return code
    return gaussian_params(code)[0]


def _per_sample_sum(t: Tensor) -> Tensor:
    return t.flatten(1).sum(dim=1)


def jacobian_sq_norm_estimate(
    code: Tensor,
    x: Tensor,
    n_projections: int = 1,
    generator: torch.Generator | None = None,
    create_graph: bool = True,
) -> Tensor:
    """Unbiased estimate of ``‖∂h/∂x‖²_F`` per sample, shape ``(N,)``.

    ``E_v ‖Jᵀv‖² = tr(J Jᵀ) = ‖J‖²_F`` for ``v ~ N(0, I)``; ``Jᵀv`` is one vector-Jacobian
    product, so the cost is a backward pass per projection whatever the code size.
    ``code`` must have been computed from ``x`` (which requires grad), and samples must not
    interact (no batch statistics), so that the batch gradient splits per sample.
    """
    if n_projections < 1:
        raise ValueError("n_projections must be >= 1")
    total = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
    for _ in range(n_projections):
        v = _noise_like(code, generator, uniform=False)
        (jtv,) = torch.autograd.grad(code, x, grad_outputs=v, create_graph=create_graph, retain_graph=True)
        total = total + _per_sample_sum(jtv.pow(2))
    return total / n_projections


def jacobian_sq_norm_exact(code: Tensor, x: Tensor, create_graph: bool = True) -> Tensor:
    """Exact ``Σⱼ ‖∇ₓ hⱼ‖²`` per sample by one backward pass per code unit.

    Cost grows with the code size: fine for a 32-d dense code, slow for conv feature maps
    (use :func:`jacobian_sq_norm_estimate` there).  Same preconditions as the estimate.
    """
    flat = code.flatten(1)
    total = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
    for j in range(flat.shape[1]):
        (grad_j,) = torch.autograd.grad(flat[:, j].sum(), x, create_graph=create_graph, retain_graph=True)
        total = total + _per_sample_sum(grad_j.pow(2))
    return total


# --------------------------------------------------------------------------- terms


@dataclass
class TermContext:
    """Everything a term may look at for one batch.

    ``clean`` is the target batch (for paired production data it may carry a 4th channel); ``output`` and
    ``code`` are the two values of the objective's ``forward``.
    """

    model: nn.Module
    clean: Tensor
    inputs: Tensor
    output: Tensor
    code: Any


class Term(ABC):
    """One weighted summand of an objective; ``name`` keys it in ``parts``."""

    name: str
    # True when the term differentiates through the inputs (the objective then makes them a
    # leaf that requires grad before the forward pass).
    needs_input_grad: ClassVar[bool] = False

    @abstractmethod
    def __call__(self, ctx: TermContext) -> Tensor: ...


@dataclass
class Reconstruction(Term):
    """Reconstruction error of ``output`` against ``clean``.

    ``loss="mse"`` (default) is ``(x − x̂)²``; ``"l1"`` is ``|x − x̂|``; ``"bce"`` is the Bernoulli negative
    log-likelihood (outputs must lie in [0, 1]).  ``reduction="mean"`` (default) averages over every element;
    ``"sum"`` sums over each sample's elements and averages over the batch: the ELBO's
    per-sample scale, needed so the VAE's KL term is not overwhelmed or dominant by accident.
    """

    weight: float = 1.0
    loss: Literal["mse", "l1", "bce"] = "mse"
    reduction: Literal["mean", "sum"] = "mean"
    name: str = "reconstruction"

    def __post_init__(self) -> None:
        if self.loss not in ("mse", "l1", "bce"):
            raise ValueError(f"unknown loss {self.loss!r}")
        if self.reduction not in ("mean", "sum"):
            raise ValueError(f"unknown reduction {self.reduction!r}")

    def __call__(self, ctx: TermContext) -> Tensor:
        if ctx.output.shape != ctx.clean.shape:
            raise ValueError(f"output shape {tuple(ctx.output.shape)} != target shape {tuple(ctx.clean.shape)}")
        if self.loss == "mse":
            err = (ctx.output - ctx.clean).pow(2)
        elif self.loss == "l1":
            err = (ctx.output - ctx.clean).abs()
        else:
            err = F.binary_cross_entropy(ctx.output, ctx.clean, reduction="none")
        value = err.mean() if self.reduction == "mean" else _per_sample_sum(err).mean()
        return self.weight * value


@dataclass
class L1Sparsity(Term):
    """``weight · mean |h|`` over the code: pushes most hidden units to exactly zero."""

    weight: float = 1e-3
    name: str = "l1_sparsity"

    def __call__(self, ctx: TermContext) -> Tensor:
        return self.weight * code_tensor(ctx.code).abs().mean()


@dataclass
class KLSparsity(Term):
    """``weight · Σⱼ KL(ρ ‖ ρ̂ⱼ)``, ρ̂ⱼ the mean activation of unit j over the batch.

    The KL between Bernoulli means only makes sense for activations in (0, 1): use a sigmoid
    (or otherwise bounded) code.  ``check_range`` raises on codes outside [0, 1] instead of
    silently producing nonsense; ρ̂ is clamped to ``[eps, 1 − eps]`` so log terms stay finite.
    For a conv code ``(N, C, H, W)`` a unit is a channel, averaged over batch and positions.
    """

    rho: float = 0.05
    weight: float = 1.0
    eps: float = 1e-6
    check_range: bool = True
    name: str = "kl_sparsity"

    def __post_init__(self) -> None:
        if not 0.0 < self.rho < 1.0:
            raise ValueError(f"rho must be in (0, 1), got {self.rho}")

    def __call__(self, ctx: TermContext) -> Tensor:
        h = code_tensor(ctx.code)
        if self.check_range and bool(((h < 0) | (h > 1)).any()):
            raise ValueError("KLSparsity needs activations in [0, 1] (use a sigmoid code)")
        dims = [0, *range(2, h.dim())]
        rho_hat = h.mean(dim=dims).clamp(self.eps, 1.0 - self.eps)
        rho = torch.as_tensor(self.rho, dtype=h.dtype, device=h.device)
        kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
        return self.weight * kl.sum()


@dataclass
class Contractive(Term):
    """``weight · Σⱼ ‖∇ₓ hⱼ‖²`` (squared Frobenius norm of the encoder Jacobian), batch mean.

    ``method``:

    * ``"auto"`` (default): ``"closed_form"`` when the model implements
      :class:`HasExactJacobian` (the dense autoencoder), else ``"estimate"``;
    * ``"closed_form"``: the model's exact formula;
    * ``"autograd"``: exact, one backward pass per code unit (small codes only);
    * ``"estimate"``: unbiased random projections ``E_v ‖Jᵀv‖²`` (any model, e.g. conv nets),
      ``n_projections`` vector-Jacobian products per step.

    All forms are differentiable (``create_graph=True``), so the penalty trains the encoder.
    """

    weight: float = 1e-3
    method: Literal["auto", "closed_form", "autograd", "estimate"] = "auto"
    n_projections: int = 1
    generator: torch.Generator | None = None
    name: str = "contractive"
    needs_input_grad: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.method not in ("auto", "closed_form", "autograd", "estimate"):
            raise ValueError(f"unknown method {self.method!r}")

    def resolve_method(self, model: nn.Module) -> str:
        if self.method == "auto":
            return "closed_form" if isinstance(model, HasExactJacobian) else "estimate"
        return self.method

    def __call__(self, ctx: TermContext) -> Tensor:
        method = self.resolve_method(ctx.model)
        if method == "closed_form":
            if not isinstance(ctx.model, HasExactJacobian):
                raise TypeError(f"{type(ctx.model).__name__} has no encoder_jacobian_sq_norm")
            sq_norm = ctx.model.encoder_jacobian_sq_norm(ctx.inputs)
        elif method == "autograd":
            sq_norm = jacobian_sq_norm_exact(code_tensor(ctx.code), ctx.inputs)
        else:
            sq_norm = jacobian_sq_norm_estimate(code_tensor(ctx.code), ctx.inputs, self.n_projections, self.generator)
        return self.weight * sq_norm.mean()


@dataclass
class KLDivergence(Term):
    """The VAE's ``KL(q(z|x) ‖ N(0, I)) = −½ Σ (1 + log σ² − μ² − σ²)``, mean over samples."""

    weight: float = 1.0
    name: str = "kl_divergence"

    def __call__(self, ctx: TermContext) -> Tensor:
        mu, logvar = gaussian_params(ctx.code)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())
        return self.weight * _per_sample_sum(kl).mean()


# --------------------------------------------------------------------------- objective


class Objective:
    """Weighted sum of terms, with an optional corruption of the model's input.

    ``forward`` runs the model (default: its ``forward_with_code``); a head with an auxiliary output the terms
    supervise passes its own (see the production forwards below).
    """

    def __init__(self, terms: Sequence[Term], corruption: Corruption | None = None,
                 forward: Forward = forward_with_code) -> None:
        if not terms:
            raise ValueError("an objective needs at least one term")
        names = [t.name for t in terms]
        if len(set(names)) != len(names) or "total" in names:
            raise ValueError(f"term names must be unique and not 'total': {names}")
        self.terms: list[Term] = list(terms)
        self.corruption = corruption
        self.forward = forward

    @property
    def needs_input_grad(self) -> bool:
        return any(t.needs_input_grad for t in self.terms)

    def make_inputs(self, clean: Tensor) -> Tensor:
        """The model input for unpaired data: the corrupted (or unchanged) clean batch."""
        return clean if self.corruption is None else self.corruption(clean)

    def __call__(
        self, model: nn.Module, clean: Tensor, inputs: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        if inputs is None:
            inputs = self.make_inputs(clean)
        elif inputs.shape[0] != clean.shape[0]:
            raise ValueError(f"batch sizes differ: inputs {inputs.shape[0]}, clean {clean.shape[0]}")
        grad_ctx: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if self.needs_input_grad:
            # The Jacobian terms differentiate the code w.r.t. this exact tensor, even when the
            # caller evaluates under torch.no_grad().
            inputs = inputs.detach().requires_grad_(True)
            grad_ctx = torch.enable_grad()
        with grad_ctx:
            output, code = self.forward(model, inputs)
            ctx = TermContext(model=model, clean=clean, inputs=inputs, output=output, code=code)
            values = {t.name: t(ctx) for t in self.terms}
            total = torch.stack(list(values.values())).sum()
        parts = {name: value.detach() for name, value in values.items()}
        parts["total"] = total.detach()
        return total, parts

    def __repr__(self) -> str:
        forward = getattr(self.forward, "__name__", repr(self.forward))
        return f"Objective(terms={self.terms!r}, corruption={self.corruption!r}, forward={forward})"


# --------------------------------------------------------------------------- production forwards


def _require(model: nn.Module, kind: type[nn.Module], what: str) -> None:
    if not isinstance(model, kind):
        raise TypeError(f"this objective needs {what}; the config builds a {type(model).__name__}")


def restored_and_opacity_logit(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """The watermark remover's restored image and opacity logit (a U-Net with ``out_activation="unblend"``)."""
    _require(model, UNet, "a U-Net with out_activation='unblend'")
    return cast(UNet, model).predict_opacity(x)


def denoised_and_noise_level(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """The noise-aware denoiser's output and its estimated σ map (half resolution)."""
    _require(model, NoiseAwareDenoiser, "a noise-aware denoiser (net.noise_estimator)")
    return cast(NoiseAwareDenoiser, model).predict_with_sigma(x)


def lab_chroma(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """A Lab colorizer's predicted ab (Lab scale, input resolution) and its code."""
    _require(model, Colorizer, "a colorizer with net.space = 'lab'")
    colorizer = cast(Colorizer, model)
    if colorizer.space != "lab":
        raise TypeError("this objective needs a colorizer with net.space = 'lab'")
    _, ab, code = colorizer.predict_ab(x)
    return ab, code


def ab_class_logits(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """A class-head colorizer's logits over quantised ab (at 1 / (2·pool) of the input size) and its code."""
    _require(model, Colorizer, "a colorizer with net.class_head")
    colorizer = cast(Colorizer, model)
    if colorizer.class_head is None:
        raise TypeError("this objective needs a colorizer with net.class_head")
    return colorizer.predict_logits(x)


# --------------------------------------------------------------------------- production terms


def _charbonnier(output: Tensor, target: Tensor) -> Tensor:
    return torch.sqrt((output - target) ** 2 + 1e-6)


@dataclass
class Charbonnier(Term):
    """Mean ``√((x̂ − x)² + 10⁻⁶)``: L1 away from zero, smooth at it (robust to outlier pixels)."""

    name: str = "charbonnier"

    def __call__(self, ctx: TermContext) -> Tensor:
        return _charbonnier(ctx.output, ctx.clean).mean()


@dataclass
class InkStrokes(Term):
    """``weight`` × the Charbonnier error averaged over the target's ink only (y < 0.5, 8-bit < 128), plus a
    one-sided term that charges lightening ink (output above the target) twice.

    Ink is 5–20 % of a page's pixels, so in a plain mean grey stroke centres cost little (the shipped
    doc-denoise lightens heavy strokes by up to 45 grey levels); averaged over the ink pixels alone the strokes
    weigh as much as the whole page.
    """

    weight: float = 0.5
    name: str = "ink_strokes"

    def __call__(self, ctx: TermContext) -> Tensor:
        out, y = ctx.output, ctx.clean
        err = _charbonnier(out, y)
        ink = (y < 0.5).to(err.dtype)
        return self.weight * ((ink * (err + F.relu(out - y))).sum() / ink.sum().clamp(min=1.0))


@dataclass
class MarkWeightedMSE(Term):
    """Squared error of the restored image, unmarked pixels (true opacity 0, the target's 4th channel)
    weighted ``clean_weight`` (1: plain MSE). Damage to clean areas (false detections) may cost more than a
    watermark left in place, as on real photos where the mark covers a few percent of the pixels."""

    clean_weight: float = 1.0
    name: str = "restoration"

    def __call__(self, ctx: TermContext) -> Tensor:
        y = ctx.clean
        mark = y[:, 3:4]
        w = torch.where(mark > 0, torch.ones_like(mark), torch.full_like(mark, self.clean_weight))
        return (w * (ctx.output - y[:, :3]) ** 2).mean()


@dataclass
class OpacityBCE(Term):
    """``weight`` × BCE of the opacity logit (``code`` of :func:`restored_and_opacity_logit`) against the true
    opacity / MAX_OPACITY. Without it the head settles in "no watermark anywhere", and through a saturated
    sigmoid an MSE on the opacity has no gradient left (both seen: an exact identity after 500-750 steps)."""

    weight: float = 0.1
    # Marked pixels (true opacity > 0) count ``marked_weight`` times an unmarked one (~9 % of the training pixels
    # are marked). With equal weights the head under-reads faint or thin marks on texture; 4x (watermark-v4) read
    # a little more of them but put false marks on clean pixels and lost on every held-out figure, so v3 keeps 1.
    marked_weight: float = 1.0
    name: str = "opacity_bce"

    def __call__(self, ctx: TermContext) -> Tensor:
        opacity = ctx.clean[:, 3:4]
        target = (opacity / MAX_OPACITY).clamp(0.0, 1.0)
        bce = F.binary_cross_entropy_with_logits(ctx.code, target, reduction="none")
        bce = torch.where(opacity > 0, bce * self.marked_weight, bce)
        return self.weight * bce.mean()


@dataclass
class PatchLogMSE(Term):
    """Mean per-patch PSNR, negated: ``10·log10(MSE + 10⁻⁵)`` per patch, averaged.

    Per-patch log-MSE rather than one MSE over the batch: a batch MSE is dominated by the noisiest patches, so
    low-noise and clean patches (most real photos) barely count and come out over-smoothed; the eval's figure
    is PSNR per σ. The 1e-5 floor caps a patch's weight at 50 dB.
    """

    name: str = "restoration"

    def __call__(self, ctx: TermContext) -> Tensor:
        mse = ((ctx.output.float() - ctx.clean[:, :3]) ** 2).mean((1, 2, 3))
        return 10.0 * torch.log10(mse + 1e-5).mean()


@dataclass
class NoiseLevelError(Term):
    """``weight`` × the error of the estimated σ map (``code`` of :func:`denoised_and_noise_level`) against the
    true level (the target's 4th channel, pooled to the map's half resolution), in units of 10 grey levels.
    Under-estimating σ costs twice over-estimating it: a non-blind denoiser given too low a level leaves noise
    in, given too high a level it only smooths a little more (CBDNet's asymmetric loss)."""

    weight: float = 0.5
    name: str = "noise_level"

    def __call__(self, ctx: TermContext) -> Tensor:
        err = (ctx.code.float() - F.avg_pool2d(ctx.clean[:, 3:4], 2)) * (255.0 / 10.0)
        return self.weight * torch.where(err < 0, -2.0 * err, err).mean()


@dataclass
class LabChroma(Term):
    """L1 or MSE of the predicted ab (``output`` of :func:`lab_chroma`) against the target's, both / AB_SCALE.

    L1 pulls towards the conditional median (more saturated); MSE towards the conditional mean (safer colours,
    higher PSNR)."""

    loss: Literal["l1", "mse"] = "l1"
    name: str = "lab_chroma"

    def __call__(self, ctx: TermContext) -> Tensor:
        target = rgb_to_lab(ctx.clean[:, :3])[:, 1:]  # targets may carry a class-weight channel
        distance = F.l1_loss if self.loss == "l1" else F.mse_loss
        return distance(ctx.output / AB_SCALE, target / AB_SCALE)


@dataclass
class AbClassCrossEntropy(Term):
    """Zhang et al. 2016: cross-entropy of the class head's logits (``output`` of :func:`ab_class_logits`)
    against the soft-encoded true ab (its 5 nearest bin centres, Gaussian σ = 5), each pixel weighted by the
    rarity of its colour (the 4th target channel that ``ColorizeTask(rebalance=λ)`` adds; unweighted without
    it). At the head's resolution: the true ab and the weights are average-pooled to it. Unlike an L1/L2
    regression on ab, uncertain pixels keep a multimodal distribution instead of collapsing to the mean of
    their colours (sepia)."""

    name: str = "ab_class"

    def __call__(self, ctx: TermContext) -> Tensor:
        logits, y = ctx.output, ctx.clean
        f = y.shape[-1] // logits.shape[-1]
        with torch.autocast(y.device.type, enabled=False):  # targets in fp32 under the legs' bf16 autocast
            ab = F.avg_pool2d(rgb_to_lab(y[:, :3].float())[:, 1:], f)
            idx, weight = soft_encode(ab, cast(Colorizer, ctx.model).centres())
            ce = -(weight * F.log_softmax(logits.float(), 1).gather(1, idx)).sum(1, keepdim=True)
            if y.shape[1] > 3:
                ce = ce * F.avg_pool2d(y[:, 3:4].float(), f)
        return ce.mean()


# --------------------------------------------------------------------------- the registry

# ``optim.loss`` name -> the objective it trains with (weights from the config's ``optim``).
OBJECTIVES: dict[str, Callable[[OptimConfig], Objective]] = {
    "charbonnier": lambda o: Objective([Charbonnier()]),
    "l1": lambda o: Objective([Reconstruction(loss="l1")]),
    "mse": lambda o: Objective([Reconstruction()]),
    # Documents: Charbonnier over the page + alpha_weight × the ink term.
    "ink_charbonnier": lambda o: Objective([Charbonnier(), InkStrokes(weight=o.alpha_weight)]),
    # Watermark removal with the unblend head: restoration MSE + direct supervision of the opacity.
    "unblend_aux": lambda o: Objective([MarkWeightedMSE(clean_weight=o.clean_weight),
                                        OpacityBCE(weight=o.alpha_weight, marked_weight=o.marked_weight)],
                                       forward=restored_and_opacity_logit),
    # The noise-aware photo denoiser: per-patch PSNR + alpha_weight × the asymmetric noise-level error.
    "noise_aware": lambda o: Objective([PatchLogMSE(), NoiseLevelError(weight=o.alpha_weight)],
                                       forward=denoised_and_noise_level),
    "lab_ab_l1": lambda o: Objective([LabChroma(loss="l1")], forward=lab_chroma),
    "lab_ab_mse": lambda o: Objective([LabChroma(loss="mse")], forward=lab_chroma),
    # Colorizer with net.class_head: rebalanced cross-entropy over quantised ab.
    "lab_ab_class": lambda o: Objective([AbClassCrossEntropy()], forward=ab_class_logits),
}


def objective_for(optim: OptimConfig) -> Objective:
    """The objective a config trains with (its ``optim.loss``, weighted by its ``optim``)."""
    try:
        make = OBJECTIVES[optim.loss]
    except KeyError:
        raise ValueError(f"unknown loss {optim.loss!r}: one of {', '.join(sorted(OBJECTIVES))}") from None
    return make(optim)
