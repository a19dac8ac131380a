"""sRGB ↔ CIE Lab (D65) in PyTorch ops that export to ONNX, and BT.601 luma.

Used inside the colorizer's graph (the service sees gray in, RGB out) and to make Lab training targets.
"""

from __future__ import annotations

import torch
from torch import Tensor

_RGB_TO_XYZ = torch.tensor([[0.412453, 0.357580, 0.180423],
                            [0.212671, 0.715160, 0.072169],
                            [0.019334, 0.119193, 0.950227]])
_XYZ_TO_RGB = torch.linalg.inv(_RGB_TO_XYZ)
_WHITE = torch.tensor([0.950456, 1.0, 1.088754])
_DELTA = 6.0 / 29.0


def luma601(rgb: Tensor) -> Tensor:
    """(N, 3, H, W) sRGB -> (N, 1, H, W) BT.601 luma."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return (rgb * w).sum(1, keepdim=True)


def srgb_to_linear(c: Tensor) -> Tensor:
    c = c.clamp(0.0, 1.0)
    return torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: Tensor) -> Tensor:
    c = c.clamp(min=0.0)
    return torch.where(c <= 0.0031308, 12.92 * c, 1.055 * c.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)


def _f(t: Tensor) -> Tensor:
    return torch.where(t > _DELTA**3, t.clamp(min=_DELTA**3) ** (1.0 / 3.0), t / (3 * _DELTA**2) + 4.0 / 29.0)


def _f_inv(t: Tensor) -> Tensor:
    return torch.where(t > _DELTA, t**3, 3 * _DELTA**2 * (t - 4.0 / 29.0))


def _mix(m: Tensor, x: Tensor) -> Tensor:
    return torch.einsum("ij,njhw->nihw", m.to(x.dtype), x)


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """(N, 3, H, W) sRGB in [0, 1] -> (N, 3, H, W) Lab, L in [0, 100]."""
    xyz = _mix(_RGB_TO_XYZ, srgb_to_linear(rgb)) / _WHITE.to(rgb.dtype).view(1, 3, 1, 1)
    f = _f(xyz)
    L = 116 * f[:, 1:2] - 16
    a = 500 * (f[:, 0:1] - f[:, 1:2])
    b = 200 * (f[:, 1:2] - f[:, 2:3])
    return torch.cat([L, a, b], 1)


def gray_to_L(gray: Tensor) -> Tensor:
    """Lightness of a neutral sRGB gray (what Lab's L is for a gray input pixel)."""
    return 116 * _f(srgb_to_linear(gray)) - 16


def lab_to_rgb(lab: Tensor) -> Tensor:
    """(N, 3, H, W) Lab -> sRGB clipped to [0, 1]."""
    L, a, b = lab[:, 0:1], lab[:, 1:2], lab[:, 2:3]
    fy = (L + 16) / 116
    fx = fy + a / 500
    fz = fy - b / 200
    xyz = torch.cat([_f_inv(fx), _f_inv(fy), _f_inv(fz)], 1) * _WHITE.to(lab.dtype).view(1, 3, 1, 1)
    # Matrix product as explicit weighted sums: einsum with a constant exports to a plain MatMul-free graph.
    m = _XYZ_TO_RGB.to(lab.dtype)
    x, y, z = xyz[:, 0:1], xyz[:, 1:2], xyz[:, 2:3]
    rgb = torch.cat([m[i, 0] * x + m[i, 1] * y + m[i, 2] * z for i in range(3)], 1)
    return linear_to_srgb(rgb).clamp(0.0, 1.0)
