"""The production U-Net and colorizer: shapes, code, ranges, FLOP counting."""

from __future__ import annotations

import pytest
import torch

from training.nets.colorizer import Colorizer
from training.nets.unet import UNet, UNetConfig, conv_flops_per_pixel


@pytest.mark.parametrize("unshuffle", [False, True])
def test_unet_shapes_and_code(unshuffle: bool):
    net = UNet(UNetConfig(3, 3, [8, 16, 32], 1, unshuffle, True)).eval()
    m = net.multiple_of
    assert m == (8 if unshuffle else 4)
    x = torch.rand(2, 3, 3 * m, 5 * m)
    y, code = net.forward_with_code(x)
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
    assert code.shape == (2, 32, 3 * m // (2 ** 2 * (2 if unshuffle else 1)), 5 * m // (2 ** 2 * (2 if unshuffle else 1)))
    assert torch.equal(net(x), y)


def test_residual_unet_starts_near_identity_and_code_depends_on_input():
    torch.manual_seed(0)
    net = UNet(UNetConfig(1, 1, [8, 16], 1, True, True)).eval()
    x = torch.rand(1, 1, 32, 32) * 0.5 + 0.25
    _, c1 = net.forward_with_code(x)
    _, c2 = net.forward_with_code(1 - x)
    assert not torch.allclose(c1, c2)


def test_flops_scale_with_width():
    small = conv_flops_per_pixel(UNet(UNetConfig(1, 1, [8, 16, 32])), 1)
    large = conv_flops_per_pixel(UNet(UNetConfig(1, 1, [16, 32, 64])), 1)
    assert 3.0 < large / small < 4.5  # conv cost ~ width²


@pytest.mark.parametrize("space", ["lab", "rgb"])
def test_colorizer_gray_in_rgb_out(space: str):
    model = Colorizer(UNetConfig(widths=[8, 16]), space=space).eval()
    gray = torch.rand(2, 1, 32, 48)
    rgb, _ = model.forward_with_code(gray)
    assert rgb.shape == (2, 3, 32, 48) and rgb.min() >= 0 and rgb.max() <= 1
    if space == "lab":
        # With zero chroma the Lab graph must reproduce the gray input on all three channels.
        torch.nn.init.zeros_(model.net.tail.weight)
        torch.nn.init.zeros_(model.net.tail.bias)
        out = model(gray)
        assert torch.allclose(out, gray.expand(-1, 3, -1, -1), atol=2e-4)


def test_unblend_opacity_threshold_passes_unsure_pixels_through_exactly():
    torch.manual_seed(0)
    net = UNet(UNetConfig(3, 3, [8, 16], 1, True, True, "unblend", opacity_threshold=0.05)).eval()
    x = torch.rand(1, 3, 32, 32)
    # The initial bias puts every opacity at sigmoid(-4)·0.8 ≈ 0.015 < 0.05: an exact identity.
    torch.nn.init.zeros_(net.tail.weight)
    assert torch.equal(net(x), x)


def test_paper_white_makes_near_white_exactly_white_and_leaves_the_rest():
    torch.manual_seed(0)
    plain = UNet(UNetConfig(1, 1, [8, 16], 1, True, True, "clamp")).eval()
    snapped = UNet(UNetConfig(1, 1, [8, 16], 1, True, True, "clamp", paper_white=0.94)).eval()
    snapped.load_state_dict(plain.state_dict())
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        y, z = plain(x), snapped(x)
    near_white = y >= 0.94
    assert 0 < near_white.float().mean() < 1  # both sides of the threshold are exercised
    assert torch.equal(z[near_white], torch.ones_like(z[near_white]))
    assert torch.equal(z[~near_white], y[~near_white])
    snapped.train()  # training sees the unsnapped output (the step has no gradient)
    assert not torch.equal(snapped(x), torch.where(snapped(x) >= 0.94, 1.0, snapped(x)))


def test_colorizer_luma_lock_and_chroma_filter():
    torch.manual_seed(0)
    model = Colorizer(UNetConfig(widths=[8, 16]), luma_lock=True, chroma_filter=8).eval()
    gray = torch.rand(1, 1, 64, 64) * 0.6 + 0.2
    with torch.no_grad():
        model.net.tail.bias.normal_(0, 0.2)  # some chroma
        rgb = model(gray)
    luma = (rgb * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    assert rgb.shape == (1, 3, 64, 64) and (rgb - gray).abs().max() > 0.01
    assert torch.allclose(luma, gray, atol=1e-4)
