"""Colorizer: gray (BT.601 luma) in, sRGB out, with the colour space handled inside the graph.

* ``space="lab"``: the U-Net sees L/100 and predicts (a, b)/AB_SCALE; the graph converts Lab -> sRGB.
  Keeping the input's lightness fixed means the network only has to learn chroma.
* ``space="rgb"``: the U-Net predicts a correction to the replicated gray directly in sRGB.
* ``class_head`` (Lab only): the U-Net's tail feeds a classifier over quantised ab (``ab_bins``, Zhang et al.
  2016) at a quarter of the input resolution; the graph decodes it with the annealed mean and upsamples ab.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ab_bins import ab_bin_centres, annealed_mean
from .color import gray_to_L, lab_to_rgb, luma601
from .unet import UNet, UNetConfig

AB_SCALE = 100.0  # |a|, |b| of sRGB colours stay below ~110


@dataclass(frozen=True)
class ClassHead:
    """The classification head (config ``net.class_head``)."""

    bin_size: float = 10.0  # ab cell size: 261 in-gamut classes at 10
    features: int = 64  # channels of the U-Net's tail (at half resolution), the classifier's input
    pool: int = 2  # average-pooled by this before the classifier: logits at 1 / (2 · pool) of the input size
    temperature: float = 0.38  # annealed mean: softmax(logits / T) · centres (Zhang et al.'s T)


class Colorizer(nn.Module):
    def __init__(self, config: UNetConfig, space: str = "lab", chroma_gain: float = 1.0,
                 luma_lock: bool = False, chroma_filter: int = 0, class_head: dict | None = None) -> None:
        super().__init__()
        self.class_head = ClassHead(**class_head) if class_head else None
        # chroma_filter = r > 0: the predicted ab go through a guided filter (radius r, the gray input as the
        # guide) before Lab->sRGB: removes the half-resolution head's blotchy/checkered chroma and snaps
        # colour edges to luma edges (SSIM on RGB punishes chroma structure the photo does not have).
        self.chroma_filter = int(chroma_filter)
        # luma_lock: shift the RGB output so its BT.601 luma equals the gray input (Lab's L is not BT.601
        # luma, and gamut clipping moves it too): the colorizer then only ever adds chroma.
        self.luma_lock = bool(luma_lock)
        if space not in ("lab", "rgb"):
            raise ValueError(f"space must be 'lab' or 'rgb', got {space!r}")
        self.space = space
        # A buffer, so a gain calibrated after training travels in the state dict (and into the graph).
        self.register_buffer("chroma_gain", torch.tensor(float(chroma_gain)))
        if space == "lab":
            config.in_channels, config.out_channels = 1, 2
            config.residual, config.out_activation = False, "none"
        else:
            config.in_channels, config.out_channels = 1, 3
            config.residual, config.out_activation = True, "clamp"
        head = self.class_head
        if head is not None:
            if space != "lab" or not config.unshuffle or head.features % 4:
                raise ValueError("class_head needs space='lab', unshuffle=True and features divisible by 4")
            config.out_channels = head.features // 4  # the tail makes 4 × this at half resolution
        self.net = UNet(config)
        self.config = config
        if head is not None:
            # No pixel-shuffle after the tail: its features stay at half resolution, where the head runs
            # (a 261-way classifier at full resolution would cost ~4x the whole U-Net).
            self.net.shuffle = nn.Identity()
            centres = ab_bin_centres(head.bin_size)
            self.classifier = nn.Conv2d(head.features, centres.shape[0], 1)
            # (2, Q, 1, 1): the annealed mean's 1x1 convolution; a buffer, so it travels into the ONNX graph.
            self.register_buffer("ab_centres", centres.T.reshape(2, -1, 1, 1).contiguous())

    @property
    def multiple_of(self) -> int:
        return self.net.multiple_of

    def centres(self) -> Tensor:
        """(Q, 2) ab bin centres of the class head."""
        return self.ab_centres.view(2, -1).T

    def predict_logits(self, gray: Tensor) -> tuple[Tensor, Tensor]:
        """(logits (N, Q, H / (2·pool), W / (2·pool)), code) of the class head."""
        assert self.class_head is not None
        feat, code = self.net.forward_with_code(gray_to_L(gray) / 100.0)
        feat = F.leaky_relu(feat, 0.1)
        if self.class_head.pool > 1:
            feat = F.avg_pool2d(feat, self.class_head.pool)
        return self.classifier(feat), code

    def predict_ab(self, gray: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(L, ab, code) for a Lab colorizer; ab on the Lab scale, at the input's resolution."""
        L = gray_to_L(gray)
        if self.class_head is not None:
            logits, code = self.predict_logits(gray)
            ab = annealed_mean(logits, self.ab_centres, self.class_head.temperature)
            # Bilinear upsampling; the guided filter (chroma_filter) then aligns colour edges with luma edges.
            ab = F.interpolate(ab, scale_factor=2 * self.class_head.pool, mode="bilinear", align_corners=False)
            return L, ab, code
        ab, code = self.net.forward_with_code(L / 100.0)
        return L, ab * AB_SCALE, code

    def forward_with_code(self, gray: Tensor) -> tuple[Tensor, Tensor]:
        if self.space == "rgb":
            return self.net.forward_with_code(gray)
        L, ab, code = self.predict_ab(gray)
        if self.chroma_filter > 0:
            ab = guided_filter(gray.expand(-1, ab.shape[1], -1, -1), ab, self.chroma_filter)
        rgb = lab_to_rgb(_cat(L, ab * self.chroma_gain))
        if self.luma_lock:
            rgb = lock_luma(rgb, gray)
        return rgb, code

    def forward(self, gray: Tensor) -> Tensor:
        return self.forward_with_code(gray)[0]


def _box(x: Tensor, r: int) -> Tensor:
    # Separable (rows, then columns): a (2r+1)² AveragePool is ~16x slower in onnxruntime at r = 16.
    # Without padding in the mean, the border counts factor, so this equals the 2-D box mean exactly.
    pool = torch.nn.functional.avg_pool2d
    x = pool(x, (1, 2 * r + 1), 1, (0, r), count_include_pad=False)
    return pool(x, (2 * r + 1, 1), 1, (r, 0), count_include_pad=False)


def guided_filter(guide: Tensor, src: Tensor, r: int, eps: float = 1e-3, s: int = 4) -> Tensor:
    """He et al.'s fast guided filter: coefficients on an s-times subsampled grid (radius r / s; the ab of
    the half-resolution head carry no finer detail), bilinearly upsampled and applied to the full-resolution
    guide. Box filters and Resize only, so it exports as plain ONNX ops."""
    F = torch.nn.functional
    g, p, rr = F.avg_pool2d(guide, s), F.avg_pool2d(src, s), max(1, r // s)
    mi, ms = _box(g, rr), _box(p, rr)
    a = (_box(g * p, rr) - mi * ms) / (_box(g * g, rr) - mi * mi + eps)
    b = ms - a * mi
    up = lambda t: F.interpolate(_box(t, rr), scale_factor=s, mode="bilinear", align_corners=False)  # noqa: E731
    return up(a) * guide + up(b)


def lock_luma(rgb: Tensor, gray: Tensor, iterations: int = 3) -> Tensor:
    """Adds the same offset to R, G and B so the BT.601 luma of ``rgb`` equals ``gray`` (chroma kept);
    repeated because clipping to [0, 1] moves the luma of saturated pixels again (3 passes: < 1e-3 left)."""
    for _ in range(iterations):
        rgb = (rgb + (gray - luma601(rgb))).clamp(0.0, 1.0)
    return rgb


def _cat(L: Tensor, ab: Tensor) -> Tensor:
    return torch.cat([L, ab], 1)


@torch.no_grad()
def calibrate_chroma_gain(model: Colorizer, batches: list[tuple[Tensor, Tensor]]) -> float:
    """Undo the L1 regression's pull towards gray: the gain that matches the mean predicted chroma
    magnitude to the targets' on held-out *training* patches (never the evaluation photos)."""
    from .color import rgb_to_lab

    pred = torch.cat([model.predict_ab(x)[1].flatten() for x, _ in batches]).abs().mean()
    target = torch.cat([rgb_to_lab(y)[:, 1:].flatten() for _, y in batches]).abs().mean()
    gain = float((target / pred.clamp(min=1e-6)).clamp(1.0, 3.0))
    model.chroma_gain.fill_(gain)
    return gain
