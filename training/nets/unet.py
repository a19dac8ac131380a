"""Production encoder–decoder: a compact residual U-Net sized for CPU serving.

Layout (``levels`` = L, widths w_0..w_{L-1}):

    input ─(pixel-unshuffle ×2, optional)─ head conv ─ [enc_0] ─down─ [enc_1] ─down─ … ─ [bottleneck]
                                                        │skip                           │
    output ◄─ (+ input, optional) ◄─ tail ◄──── [dec_0] ◄─up─ [dec_1] ◄─up─ … ◄───────────┘

* Skips are additive (cheaper than concatenation at equal width, and exported as a single Add).
* ``unshuffle=True`` runs the whole network at half resolution (FFDNet's trick): four times fewer
  FLOPs per megapixel for a small loss of fine detail, which the residual connection restores.
* ``residual=True`` makes the network predict a correction to the input (noise for a denoiser), the
  easiest function for it to learn when input and output are close.
* ``forward_with_code`` returns the bottleneck activations as the code the objectives act on.
* ``out_activation="unblend"`` (watermark removal) replaces the residual by an alpha-blend inversion.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

MAX_OPACITY = 0.8  # the unblend head's opacity ceiling: keeps 1 / (1 - a) ≤ 5


@dataclass
class UNetConfig:
    in_channels: int = 1
    out_channels: int = 1
    widths: list[int] = field(default_factory=lambda: [16, 32, 64])
    convs_per_block: int = 2
    unshuffle: bool = False
    residual: bool = True
    # "clamp": output clipped to [0, 1] (Clip in ONNX); "sigmoid"; "none": raw (e.g. Lab ab heads);
    # "unblend": the net predicts a watermark's opacity a and colour c per pixel and the output inverts the
    # alpha blend, (x - a·c) / (1 - a): exact where a = 0, so unmarked pixels pass through untouched.
    out_activation: str = "clamp"
    # "unblend" only: opacities below this are set to exactly 0 (a' = relu(a - t) · MAX / (MAX - t)), so
    # pixels the net is not confident about pass through untouched instead of being slightly "unblended".
    opacity_threshold: float = 0.0
    # Extra conditioning channels given at half resolution (after the unshuffle), concatenated before the head:
    # the noise-level map of the noise-aware photo denoiser (FFDNet's input layout).
    cond_channels: int = 0
    # "clamp" only, at inference: outputs at or above this become exactly 1.0 (0: off). A graph-only step for
    # documents: the denoiser leaves cleaned paper at 0.94-0.99 instead of 1.0, and that faint speckle made a
    # cleaned page up to 2.6x its input's size (issue 14); exact white compresses to almost nothing.
    paper_white: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _act() -> nn.Module:
    # LeakyReLU keeps a gradient for negative inputs; noise residuals are signed.
    return nn.LeakyReLU(0.1, inplace=True)


class ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, n: int) -> None:
        layers: list[nn.Module] = []
        for i in range(n):
            layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1), _act()]
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Conv block with an identity shortcut (same width in and out)."""

    def __init__(self, width: int, n: int) -> None:
        super().__init__()
        self.body = ConvBlock(width, width, n)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class UNet(nn.Module):
    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        w = config.widths
        scale_in = 4 if config.unshuffle else 1
        self.unshuffle = nn.PixelUnshuffle(2) if config.unshuffle else nn.Identity()
        self.shuffle = nn.PixelShuffle(2) if config.unshuffle else nn.Identity()
        head_in = config.in_channels * scale_in + config.cond_channels
        self.head = nn.Sequential(nn.Conv2d(head_in, w[0], 3, padding=1), _act())
        n = config.convs_per_block
        self.encoders = nn.ModuleList([ResBlock(c, n) for c in w[:-1]])
        # Strided 2x2 convs downsample (learned, and cheaper than a 3x3 conv + pool).
        self.downs = nn.ModuleList([nn.Conv2d(w[i], w[i + 1], 2, stride=2) for i in range(len(w) - 1)])
        self.bottleneck = ResBlock(w[-1], n)
        self.ups = nn.ModuleList([nn.ConvTranspose2d(w[i + 1], w[i], 2, stride=2) for i in range(len(w) - 1)])
        self.decoders = nn.ModuleList([ResBlock(c, n) for c in w[:-1]])
        tail_channels = config.out_channels + 1 if config.out_activation == "unblend" else config.out_channels
        self.tail = nn.Conv2d(w[0], tail_channels * scale_in, 3, padding=1)
        if config.out_activation == "unblend":
            with torch.no_grad():  # start near "no watermark": opacity ≈ sigmoid(-4) · 0.8 ≈ 0.015
                self.tail.bias.view(tail_channels, scale_in)[0].fill_(-4.0)

    @property
    def multiple_of(self) -> int:
        """Height and width must be multiples of this (one halving per level, plus the unshuffle)."""
        return (2 ** (len(self.config.widths) - 1)) * (2 if self.config.unshuffle else 1)

    def _trunk(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        """The tail's raw output at the input's resolution (before any residual, unblend or activation) and
        the bottleneck code."""
        h = self.unshuffle(x)
        if self.config.cond_channels:
            if cond is None:
                raise ValueError(f"this U-Net needs {self.config.cond_channels} conditioning channel(s)")
            h = torch.cat([h, cond], 1)
        h = self.head(h)
        skips: list[Tensor] = []
        for enc, down in zip(self.encoders, self.downs):
            h = enc(h)
            skips.append(h)
            h = down(h)
        code = self.bottleneck(h)
        h = code
        for i in reversed(range(len(self.ups))):
            h = self.decoders[i](self.ups[i](h) + skips[i])
        return self.shuffle(self.tail(h)), code

    def forward_with_code(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y, code = self._trunk(x, cond)
        if self.config.out_activation == "unblend":
            y = self._unblend(x, y)
            return (y if self.training else y.clamp(0.0, 1.0)), code
        if self.config.residual:
            if self.config.in_channels == self.config.out_channels:
                y = x + y
            else:  # gray -> colour: the correction is added to the replicated luma.
                y = x.expand(-1, self.config.out_channels, -1, -1) + y
        act = self.config.out_activation
        if act == "clamp" and not self.training:
            # Clamped only at inference: a clamp in training has zero gradient once a bad step pushes the
            # whole output out of range, and the run never recovers (seen once: loss stuck at 0.49).
            y = y.clamp(0.0, 1.0)
            if self.config.paper_white > 0:
                y = torch.where(y >= self.config.paper_white, torch.ones_like(y), y)
        elif act == "sigmoid":
            y = torch.sigmoid(y)
        return y, code

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.forward_with_code(x, cond)[0]

    def _unblend(self, x: Tensor, t: Tensor) -> Tensor:
        """Inverts the alpha blend with the opacity and colour the tail predicts: (x - a·c) / (1 - a)."""
        alpha = torch.sigmoid(t[:, :1]) * MAX_OPACITY
        tau = float(self.config.opacity_threshold)
        if tau > 0:
            alpha = torch.relu(alpha - tau) * (MAX_OPACITY / (MAX_OPACITY - tau))
        return (x - alpha * torch.sigmoid(t[:, 1:])) / (1.0 - alpha)

    def predict_opacity(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(restored image, opacity logit) of an unblend model, for the auxiliary opacity loss; the image is not
        clamped, in training as in eval mode."""
        if self.config.out_activation != "unblend":
            raise ValueError("predict_opacity needs out_activation='unblend'")
        t, _ = self._trunk(x, None)
        return self._unblend(x, t), t[:, :1]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_flops_per_pixel(model: nn.Module, in_channels: int, size: int = 64) -> float:
    """FLOPs (2 × multiply–accumulates) of all convolutions per input pixel, measured by hooks."""
    total = 0

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += 2 * k * output.numel()
        elif isinstance(module, nn.ConvTranspose2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            total += 2 * k * inputs[0].numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, size, size))
    finally:
        for h in handles:
            h.remove()
    return total / (size * size)
