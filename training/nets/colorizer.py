"""Colorizer: gray (BT.601 luma) in, sRGB out, with the colour space handled inside the graph.

* ``space="lab"``: the U-Net sees L/100 and predicts (a, b)/AB_SCALE; the graph converts Lab -> sRGB.
  Keeping the input's lightness fixed means the network only has to learn chroma.
* ``space="rgb"``: the U-Net predicts a correction to the replicated gray directly in sRGB.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .color import gray_to_L, lab_to_rgb
from .unet import UNet, UNetConfig

AB_SCALE = 100.0  # |a|, |b| of sRGB colours stay below ~110


class Colorizer(nn.Module):
    def __init__(self, config: UNetConfig, space: str = "lab", chroma_gain: float = 1.0) -> None:
        super().__init__()
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
        self.net = UNet(config)
        self.config = config

    @property
    def multiple_of(self) -> int:
        return self.net.multiple_of

    def predict_ab(self, gray: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(L, ab, code) for a Lab colorizer; ab on the Lab scale."""
        L = gray_to_L(gray)
        ab, code = self.net.forward_with_code(L / 100.0)
        return L, ab * AB_SCALE, code

    def forward_with_code(self, gray: Tensor) -> tuple[Tensor, Tensor]:
        if self.space == "rgb":
            return self.net.forward_with_code(gray)
        L, ab, code = self.predict_ab(gray)
        rgb = lab_to_rgb(_cat(L, ab * self.chroma_gain))
        return rgb, code

    def forward(self, gray: Tensor) -> Tensor:
        return self.forward_with_code(gray)[0]


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
