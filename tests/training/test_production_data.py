"""Data generators of the production models: determinism, ranges, and that corruptions really corrupt."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt

from training.data.degrade import corrupt_page, jpeg
from training.data.fonts import eval_fonts, training_fonts
from training.data.noise import add_gaussian, random_noise
from training.data.pages import render_page
from training.data.tasks import ColorizeTask, DocDenoiseTask, PhotoDenoiseTask, WatermarkTask
from training.data.watermarks import add_watermark, add_watermark_in_view
from training.nets.ab_bins import ab_bin_centres, rebalance_weights
from training.nets.color import lab_to_rgb, luma601, rgb_to_lab


def _photos(n: int = 3, size: int = 300) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    return [np.clip(np.stack([xx, yy, (xx + yy) // 2], -1) + rng.integers(0, 40, (size, size, 3)), 0, 255)
            .astype(np.uint8) for _ in range(n)]


def test_pages_are_deterministic_and_carry_text():
    fonts = training_fonts()
    text_a: list[str] = []
    a = render_page(np.random.default_rng(3), fonts, 400, 500, text=text_a)
    b = render_page(np.random.default_rng(3), fonts, 400, 500)
    c = render_page(np.random.default_rng(4), fonts, 400, 500)
    assert a.shape == (500, 400) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert 0.005 < (a < 0.5).mean() < 0.5  # some ink, mostly paper
    assert len(" ".join(text_a)) > 50


def test_corruption_changes_page_and_stays_in_range():
    rng = np.random.default_rng(0)
    page = render_page(rng, training_fonts(), 300, 300)
    diffs = []
    for _ in range(10):
        dirty = corrupt_page(rng, page, page)
        assert dirty.shape == page.shape and dirty.dtype == np.float32
        assert dirty.min() >= 0 and dirty.max() <= 1
        diffs.append(float(np.abs(dirty - page).mean()))
    assert min(diffs) > 0.005  # every draw is dirtier than the clean page
    assert np.std(diffs) > 0.001  # corruptions vary between draws


def test_jpeg_roundtrip_is_lossy_but_close():
    img = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    out = jpeg(np.random.default_rng(0), img, quality=30)
    assert out.shape == img.shape and 0.01 < np.abs(out - img).mean() < 0.4


def test_gaussian_noise_has_the_requested_sigma():
    img = np.full((200, 200, 3), 0.5, np.float32)
    noisy = add_gaussian(np.random.default_rng(0), img, 25.0)
    assert abs((noisy - img).std() * 255 - 25.0) < 1.0
    blind = random_noise(np.random.default_rng(1), img)
    assert blind.shape == img.shape and blind.min() >= 0 and blind.max() <= 1


def test_watermark_mask_matches_the_change():
    img = np.full((200, 240, 3), 0.5, np.float32)
    for seed in range(5):
        marked, alpha = add_watermark(np.random.default_rng(seed), img, training_fonts())
        assert alpha.shape == img.shape[:2] and 0 < alpha.max() <= 0.7 + 1e-6
        changed = np.abs(marked - img).max(-1) > 1e-3
        assert changed.any()
        assert not (changed & (alpha == 0)).any()  # nothing changes outside the mask


def test_marks_laid_out_on_a_whole_image_match_their_mask():
    img = np.full((64, 80, 3), 0.5, np.float32)
    unmarked = 0
    for seed in range(20):
        marked, alpha = add_watermark_in_view(np.random.default_rng(seed), img, training_fonts(), canvas=640)
        again, _ = add_watermark_in_view(np.random.default_rng(seed), img, training_fonts(), canvas=640)
        assert np.array_equal(marked, again) and alpha.shape == img.shape[:2] and alpha.max() <= 0.7 + 1e-6
        changed = np.abs(marked - img).max(-1) > 1e-3
        assert not (changed & (alpha == 0)).any()
        unmarked += not changed.any()
    assert unmarked == 0  # the window is placed where the marks are


def test_marks_laid_out_on_a_whole_image_come_larger_than_a_crop_holds():
    """Inside a 64-px crop, text is at most 48 px and a logo's radius 32, so no stroke is 32 px wide; laid out on a
    640-px image (as on the eval photos), a window shows the wide strokes of 97-px text and filled 100-px logos."""
    img = np.full((64, 64, 3), 0.5, np.float32)

    def widest_stroke(mark) -> float:  # twice the largest disc inside the mask, the crop's edge closing it
        return max(2 * distance_transform_edt(np.pad(mark(np.random.default_rng(s))[1] > 0.02, 1)).max()
                   for s in range(100))

    in_crop = widest_stroke(lambda rng: add_watermark(rng, img, training_fonts()))
    in_view = widest_stroke(lambda rng: add_watermark_in_view(rng, img, training_fonts(), canvas=640))
    assert in_crop < 32 <= in_view


@pytest.mark.parametrize("make", [
    lambda: DocDenoiseTask(seed=0, crop=48, batch_size=3, pages=2),
    lambda: PhotoDenoiseTask(_photos(), seed=0, crop=48, batch_size=3),
    lambda: WatermarkTask(_photos(), seed=0, crop=48, batch_size=3, pages=2),
    lambda: WatermarkTask(_photos(), seed=0, crop=48, batch_size=3, pages=2, mark_canvas=320),
    lambda: ColorizeTask(_photos(), seed=0, crop=48, batch_size=3),
])
def test_batches_are_a_function_of_seed_and_step(make):
    task = make()
    x1, y1 = task.batch(5)
    x2, y2 = make().batch(5)
    x3, _ = task.batch(6)
    assert x1.shape == (3, task.in_channels, 48, 48) and y1.shape == (3, task.out_channels, 48, 48)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)
    assert x1.min() >= 0 and x1.max() <= 1 and y1.min() >= 0 and y1.max() <= 1
    assert not torch.equal(x1, y1) if task.in_channels == task.out_channels else True


def test_colorize_input_is_bt601_luma_of_target():
    x, y = ColorizeTask(_photos(), seed=0, crop=32, batch_size=2).batch(0)
    assert torch.allclose(x, luma601(y), atol=1e-6)


def test_rebalancing_weights_average_one_and_weaken_towards_uniform_as_lambda_rises():
    centres = ab_bin_centres(10.0)
    chroma = centres.norm(dim=1).double()
    prior = torch.exp(-chroma / 10.0)  # most pixels near neutral, as in photos
    prior = prior / prior.sum()
    neutral = chroma < 5
    share_of_neutral, weight_of_neutral = [], []
    for lam in (0.5, 0.8, 1.0):
        w = rebalance_weights(prior, centres, lam).double()
        smooth = torch.exp(-torch.cdist(centres.double(), centres.double()) ** 2 / 50.0) @ prior
        assert abs(float((smooth / smooth.sum() * w).sum()) - 1.0) < 1e-5  # E_p̃[w] = 1
        share_of_neutral.append(float((prior * w)[neutral].sum() / (prior * w).sum()))
        weight_of_neutral.append(float(w[neutral].mean()))
    assert torch.allclose(rebalance_weights(prior, centres, 1.0), torch.ones(len(centres)))  # λ = 1: no rebalancing
    assert share_of_neutral[0] < share_of_neutral[1] < share_of_neutral[2]
    assert weight_of_neutral[0] < weight_of_neutral[1] < 1.0


def test_colorize_v4_is_v3_with_weaker_rebalancing():
    """v4 changes one thing against v3 (net, loss, seed, photos alike): class rebalancing λ 0.5 -> 0.8, so that
    near-neutral pixels weigh more against rare saturated colours. Legs train v3 again from leg 4 on: a long leg of
    each tells the rebalancing's effect from the leg length's."""
    from training.config import CONFIG_DIR, LEG_CONFIGS, TrainConfig

    assert LEG_CONFIGS["colorize"] == "colorize-v3"
    v3, v4 = (TrainConfig.load(CONFIG_DIR / f"colorize-{v}.json") for v in ("v3", "v4"))
    assert (v4.net, v4.optim, v4.seed, v4.tiling) == (v3.net, v3.optim, v3.seed, v3.tiling)
    assert {k: v for k, v in v4.data.items() if k != "rebalance"} == {k: v for k, v in v3.data.items()
                                                                      if k != "rebalance"}
    assert (v3.data["rebalance"], v4.data["rebalance"]) == (0.5, 0.8)
    gray = [np.full((64, 64, 3), 128, np.uint8)] + _photos(2, 64)  # a neutral photo and two coloured ones
    tasks = [ColorizeTask(gray, seed=0, crop=32, batch_size=2, rebalance=cfg.data["rebalance"]) for cfg in (v3, v4)]
    neutral_bin = int(ab_bin_centres(10.0).norm(dim=1).argmin())
    assert tasks[0]._class_weights[neutral_bin] < tasks[1]._class_weights[neutral_bin]


def test_lab_roundtrip():
    rgb = torch.rand(2, 3, 16, 16)
    assert torch.allclose(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-4)
    lab = rgb_to_lab(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)).flatten()
    assert abs(lab[0] - 53.24) < 0.1 and abs(lab[1] - 80.09) < 0.2 and abs(lab[2] - 67.20) < 0.2  # sRGB red


def test_training_and_eval_fonts_are_disjoint():
    train, ev = training_fonts(), eval_fonts()
    assert {f.name for f in train}.isdisjoint({f.name for f in ev})
    train_files = {p.name for f in train for p in (f.regular, f.bold, f.italic)}
    eval_files = {p.name for f in ev for p in (f.regular, f.bold, f.italic)}
    assert train_files.isdisjoint(eval_files)
