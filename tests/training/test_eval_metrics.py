"""Metrics and baselines used by training.evaluate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training import baselines as B
from training.metrics import cer, colourfulness, edit_distance, psnr, rmse
from training.nets.colorizer import Colorizer, calibrate_chroma_gain
from training.nets.unet import UNetConfig


def _levenshtein_reference(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def test_edit_distance_matches_the_textbook_dp():
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = "".join(rng.choice(list("abc "), int(rng.integers(0, 12))))
        b = "".join(rng.choice(list("abc "), int(rng.integers(0, 12))))
        assert edit_distance(a, b) == _levenshtein_reference(a, b)
    assert cer("hello  world", "hello world") == 0.0 and cer("abcd", "abxd") == 25.0


def test_psnr_rmse_colourfulness():
    a = np.zeros((8, 8), np.float32)
    assert rmse(a, a + 0.1) == pytest.approx(0.1, rel=1e-5) and psnr(a, a + 0.1) == pytest.approx(20.0, rel=1e-4)
    gray = np.repeat(np.random.default_rng(0).random((16, 16, 1)), 3, 2)
    vivid = np.random.default_rng(1).random((16, 16, 3))
    assert colourfulness(gray) == pytest.approx(0.0, abs=1e-6) and colourfulness(vivid) > 20


def test_binarisation_baselines_are_binary():
    img = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    for out in (B.otsu(img), B.sauvola(img)):
        assert out.shape == img.shape and set(np.unique(out)) <= {0.0, 1.0}


def test_telea_only_changes_the_mask():
    img = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    mask = np.zeros((32, 32), bool)
    mask[10:14, 5:25] = True
    out = B.telea(img, mask)
    assert np.abs(out[~mask] - img[~mask]).max() <= 1 / 255 + 1e-6
    assert np.abs(out[mask] - img[mask]).max() > 0.05


def test_chroma_gain_is_calibrated_and_saved():
    torch.manual_seed(0)
    model = Colorizer(UNetConfig(widths=[8, 16]), "lab").eval()
    x = torch.rand(2, 1, 32, 32)
    y = torch.rand(2, 3, 32, 32)
    gain = calibrate_chroma_gain(model, [(x, y)])
    assert 1.0 <= gain <= 3.0 and float(model.state_dict()["chroma_gain"]) == pytest.approx(gain)


def test_watermark_eval_says_whether_the_error_lies_on_the_marks_or_off_them():
    """The figure that tells a left-in mark (share near 1) from damage to clean pixels (share near the marks'
    area): a model that changes nothing leaves all its error on the marks; one that brightens everything puts
    most of it off them."""
    from training.quality import watermark

    left_in = watermark.evaluate(lambda x: x, quick=True)
    assert left_in["error_on_mark_share"] > 0.98
    assert left_in["summary"]["error_on_mark_share"] == round(left_in["error_on_mark_share"], 3)
    damaging = watermark.evaluate(lambda x: np.clip(x + 0.2, 0.0, 1.0).astype(np.float32), quick=True)
    assert damaging["error_on_mark_share"] < 0.5
    assert "lies on the true marks" in "\n".join(watermark.markdown(left_in))


def test_watermark_score_counts_the_worst_unmarked_image():
    """Version 3: the score is the mean of the marked photos' PSNR and the worst unmarked image's PSNR against its
    input (up to 40 dB), so damage to clean images costs score as marks left in do."""
    from training.quality import watermark

    untouched = watermark.evaluate(lambda x: x, quick=True)  # unmarked images come back identical: 40 dB counted
    assert untouched["score"] == pytest.approx(0.5 * (untouched["row"]["watermark (ours, no mask)"] + 40.0))
    damaging = watermark.evaluate(lambda x: np.clip(x + 0.05, 0.0, 1.0).astype(np.float32), quick=True)
    worst = min(damaging["unmarked_psnr"].values())
    assert worst < 40.0
    assert damaging["score"] == pytest.approx(0.5 * (damaging["row"]["watermark (ours, no mask)"] + worst))
    assert damaging["score"] < untouched["score"]


def test_colorize_off_hue_area_and_colour_recall_on_a_half_red_half_grey_photo():
    from training.quality.colorize import colour_recall, off_hue_regions

    ref = np.full((80, 80, 3), 0.5, np.float32)
    ref[:, :40] = (0.8, 0.1, 0.1)  # left half red, right half neutral grey
    grey = np.repeat((ref @ np.array([0.299, 0.587, 0.114], np.float32))[..., None], 3, 2)
    assert off_hue_regions(ref, ref) == {"off_hue_pct": 0.0, "largest_pct": 0.0, "on_neutral_pct": 0.0}
    assert colour_recall(ref, ref) == 100.0 and colour_recall(grey, ref) == 0.0
    assert off_hue_regions(grey, ref)["off_hue_pct"] == 0.0  # gray is never off-hue (colourfulness rules it out)

    all_red = np.broadcast_to(np.array((0.8, 0.1, 0.1), np.float32), ref.shape).copy()
    r = off_hue_regions(all_red, ref)  # colour where the original has none: the grey half, minus the blurred seam
    assert 40 < r["off_hue_pct"] <= 50 and r["on_neutral_pct"] == r["off_hue_pct"]
    assert colour_recall(all_red, ref) > 95

    green_left = ref.copy()
    green_left[:, :40] = (0.1, 0.7, 0.1)  # the red half in a wrong hue, the grey half right
    r = off_hue_regions(green_left, ref)  # the σ = 2 px blur carries the green a few pixels over the seam
    assert 45 < r["off_hue_pct"] <= 55 and r["on_neutral_pct"] == 0.0 and r["largest_pct"] == r["off_hue_pct"]
    assert colour_recall(green_left, ref) < 5


def test_colorize_off_hue_regions_below_one_percent_of_the_image_do_not_count():
    from training.quality.colorize import off_hue_regions

    ref = np.full((100, 100, 3), 0.5, np.float32)
    out = ref.copy()
    out[10:16, 10:16] = (0.1, 0.7, 0.1)  # 36 px, 0.36 % of the image: a small blotch
    r = off_hue_regions(out, ref)
    assert r["off_hue_pct"] == 0.0 and r["on_neutral_pct"] == 0.0 and 0 < r["largest_pct"] < 1
    out[50:70, 50:70] = (0.1, 0.7, 0.1)  # 400 px, 4 %: counts
    assert 4 <= off_hue_regions(out, ref)["off_hue_pct"] < 7  # the σ = 2 px blur widens it by a pixel or two
