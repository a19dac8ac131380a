"""Documents, do no harm: real-scan page generators, the clean-in evaluation metrics, the ink-weighted loss."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from training.builders import build_net
from training.config import CONFIG_DIR, LEG_CONFIGS, OptimConfig, TrainConfig
from training.data.degrade import DirtOptions, corrupt_page, light_dirt, specks
from training.data.fonts import eval_typewriter_fonts, training_fonts
from training.data.pages import binarize, ink_bleed, render_heavy_page, render_page, render_scan_page, \
    render_typewriter_page, SCAN_KINDS
from training.data.tasks import DocDenoiseTask, _rng
from training.evalsets import CLEAN_IN_QUICK, clean_in_pages
from training.objectives import objective_for
from training.quality.doc import MAX_INK_SHIFT, evaluate_clean_in, ink_lightened_pct, ink_mean_shift, \
    text_change_pct

REPO = Path(__file__).resolve().parents[2]
KINDS = {"plain": 1.0, "heavy": 1.0, "typewriter": 1.0, "headings": 1.0, "colour": 1.0}


def _stroke_depth(page: np.ndarray) -> float:
    """Share of ink pixels at least 2 px inside a stroke (0 for hairlines, high for heavy strokes)."""
    ink = (page < 0.5).astype(np.uint8)
    return float((cv2.distanceTransform(ink, cv2.DIST_L2, 3)[ink > 0] >= 2.0).mean())


def test_every_scan_kind_renders_a_page_with_ink():
    for kind in SCAN_KINDS:
        text: list[str] = []
        page = render_scan_page(np.random.default_rng(1), training_fonts(), kind, 400, 500, text)
        assert page.shape == (500, 400) and page.dtype == np.float32 and 0 <= page.min() and page.max() <= 1
        assert 0.005 < (page < 0.5).mean() < 0.6 and text, kind


def test_binary_pages_are_binary():
    page = render_page(np.random.default_rng(0), training_fonts(), 300, 300)
    assert len(np.unique(page)) > 2 and set(np.unique(binarize(page)).tolist()) == {0.0, 1.0}
    task = DocDenoiseTask(seed=0, crop=64, batch_size=6, pages=3, page_kinds=KINDS, binary_fraction=1.0)
    for step in range(3):
        _, y = task.batch(step)
        assert set(torch.unique(y).tolist()) <= {0.0, 1.0}


def test_clean_pairs_are_identical_and_light_dirt_is_not():
    clean = DocDenoiseTask(seed=0, crop=64, batch_size=6, pages=2, page_kinds=KINDS, clean_fraction=1.0)
    x, y = clean.batch(0)
    assert torch.equal(x, y)
    light = DocDenoiseTask(seed=0, crop=64, batch_size=6, pages=2, page_kinds={"plain": 1.0}, light_fraction=1.0)
    x, y = light.batch(0)
    diff = (x - y).abs().flatten(1)
    assert (diff.max(1).values > 0).all()  # every gray crop got some dirt …
    assert diff.mean(1).max() < 0.05  # … and only a little


def test_light_dirt_keeps_a_binary_page_binary():
    page = binarize(render_page(np.random.default_rng(2), training_fonts(), 200, 200))
    outs = [light_dirt(np.random.default_rng(s), page) for s in range(10)]
    binary = [o for o in outs if set(np.unique(o).tolist()) <= {0.0, 1.0}]
    assert len(binary) >= 4 and any(not np.array_equal(o, page) for o in binary)


def test_specks_darken_a_few_pixels():
    img = np.ones((200, 200), np.float32)
    out = specks(np.random.default_rng(0), img, density=8.0)
    dark = out < 0.97
    assert 0.0005 < dark.mean() < 0.05 and out.min() < 0.6


def test_heavy_strokes_are_heavy():
    fonts = training_fonts()
    plain = render_page(np.random.default_rng(5), fonts, 600, 600)
    heavy = render_heavy_page(np.random.default_rng(5), fonts, 600, 600, bleed=1)
    assert _stroke_depth(heavy) > 2 * _stroke_depth(plain) and (heavy < 0.5).mean() > 1.5 * (plain < 0.5).mean()
    typed = [render_typewriter_page(np.random.default_rng(5), fonts, 600, 600, bleed=b, bold=True, size=24)
             for b in (0, 2)]
    assert _stroke_depth(typed[1]) > _stroke_depth(typed[0]) + 0.1
    assert np.array_equal(ink_bleed(plain, 0), plain) and (ink_bleed(plain, 1) <= plain).all()


def test_default_doc_task_keeps_the_original_batches():
    """Without the real-scan fields a batch is the original recipe, draw for draw (older configs resume exactly)."""
    task = DocDenoiseTask(seed=4, crop=48, batch_size=3, pages=2)
    for step in (0, 9):
        rng = _rng(4, step)
        xs, ys = [], []
        for _ in range(3):
            i, j = rng.integers(2, size=2)
            clean = task._crop(rng, task._pages[i])
            xs.append(corrupt_page(rng, clean, task._crop(rng, task._pages[j])))
            ys.append(clean)
        x, y = task.batch(step)
        assert np.array_equal(x[:, 0].numpy(), np.stack(xs)) and np.array_equal(y[:, 0].numpy(), np.stack(ys))


def test_dirt_options_add_dirt_only_when_asked():
    page = render_page(np.random.default_rng(0), training_fonts(), 160, 160)
    a = corrupt_page(np.random.default_rng(1), page, page)
    b = corrupt_page(np.random.default_rng(1), page, page, None)
    c = corrupt_page(np.random.default_rng(1), page, page, DirtOptions(specks=1.0, faint_rings=1.0))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_clean_in_metrics_on_hand_made_arrays():
    inp = np.ones((20, 20), np.float32)
    inp[:10] = 0.0  # 200 ink pixels
    out = inp.copy()
    out[0, :3] = 200 / 255  # 3 ink pixels turn light
    out[1, :10] = 20 / 255  # 10 turn grey but stay ink
    assert ink_lightened_pct(inp, out) == pytest.approx(1.5)
    assert ink_mean_shift(inp, out) == pytest.approx((3 * 200 + 10 * 20) / 200)
    assert ink_lightened_pct(inp, inp) == 0.0 and ink_mean_shift(inp, inp) == 0.0
    edge = inp.copy()
    edge[:10] = 127 / 255  # 127 is ink, 128 is not
    assert ink_lightened_pct(edge, edge + 1 / 255) == 100.0
    assert ink_lightened_pct(np.ones((4, 4), np.float32), np.zeros((4, 4), np.float32)) == 0.0  # no ink at all
    assert text_change_pct("the cat sat", "the cat sat") == 0.0
    assert text_change_pct("the cat sat", "the cot sat") == pytest.approx(100 / 11)


def test_clean_in_bars_pass_identity_and_fail_a_model_that_greys_the_ink():
    identity = evaluate_clean_in(lambda x: x, quick=True, ocr=False)
    assert set(identity["rows"]) == set(CLEAN_IN_QUICK)
    assert all(b["met"] for b in identity["bars"]) and identity["capped_psnr"] == pytest.approx(40.0)
    greyed = evaluate_clean_in(lambda x: np.maximum(x, 0.6).astype(np.float32), quick=True, ocr=False)
    assert not any(b["met"] for b in greyed["bars"])
    shifted = evaluate_clean_in(lambda x: np.clip(x + (MAX_INK_SHIFT + 2) / 255, 0, 1), quick=True, ocr=False)
    (shift_bar,) = [b for b in shifted["bars"] if "ink mean" in b["bar"]]
    assert not shift_bar["met"] and shift_bar["ours"] > MAX_INK_SHIFT


def test_clean_in_pages_are_fixed_clean_and_typed_in_an_eval_font():
    a, b = clean_in_pages(quick=True), clean_in_pages(quick=True)
    assert [p.name for p in a] == list(CLEAN_IN_QUICK)
    assert all(np.array_equal(p.image, q.image) for p, q in zip(a, b))
    full = {p.name: p for p in clean_in_pages()}
    assert set(np.unique(full["typewriter, heavy, binary"].image).tolist()) == {0.0, 1.0}
    assert _stroke_depth(full["typewriter, heavy, binary"].image) > 0.3
    assert {f.name for f in eval_typewriter_fonts()}.isdisjoint({f.name for f in training_fonts()})


class _Echo(torch.nn.Module):
    """A "model" whose output is its input."""

    def forward_with_code(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


def _ink_loss(output: torch.Tensor, y: torch.Tensor, ink_weight: float = 0.5) -> torch.Tensor:
    """The documents' objective (``ink_charbonnier``) of ``output`` against ``y``."""
    objective = objective_for(OptimConfig(loss="ink_charbonnier", alpha_weight=ink_weight))
    return objective(_Echo(), clean=y, inputs=output)[0]


def test_ink_loss_charges_lightening_ink_more():
    y = torch.ones(1, 1, 8, 8)
    y[..., :4, :] = 0.0
    lighter, darker = y.clone(), y.clone()
    lighter[..., :4, :] += 0.2
    darker[..., 4:, :] -= 0.2  # the same error on paper
    assert _ink_loss(lighter, y) > 1.5 * _ink_loss(darker, y)
    plain = torch.sqrt((lighter - y) ** 2 + 1e-6).mean()
    assert _ink_loss(lighter, y, ink_weight=0.0) == pytest.approx(plain.item())
    assert torch.isfinite(_ink_loss(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 4, 4)))  # no ink: no 0/0


def test_v3_is_the_long_net_with_paper_white_and_the_ink_loss():
    cfg = TrainConfig.load(CONFIG_DIR / "doc-denoise-v3.json")
    long = TrainConfig.load(CONFIG_DIR / "doc-denoise-long.json")
    # The same network as doc-denoise-long; paper_white is a graph-only step at inference (no parameters).
    assert {k: v for k, v in cfg.net.items() if k != "paper_white"} == long.net
    assert cfg.net["paper_white"] == 0.94 and cfg.optim.loss == "ink_charbonnier"
    model = build_net(cfg)
    x, y = DocDenoiseTask(seed=0, crop=48, batch_size=2, pages=2,
                          **{k: v for k, v in cfg.data.items() if k not in ("crop", "batch_size", "pages")}).batch(0)
    assert torch.isfinite(objective_for(cfg.optim)(model, clean=y, inputs=x)[0])


def test_v4_is_v3_on_a_wider_net_which_the_shipped_onnx_fills():
    """v4 is v3 (same data, loss, paper white) with every width × 1.5. Its first leg widened the v3 weights
    (test_training_legs checks widening); since v5's first leg shipped, the shipped ONNX is of this net: every
    tensor is copied as it is."""
    from training.warm_start import load_promoted, onnx_weights

    v3, v4 = (TrainConfig.load(CONFIG_DIR / f"doc-denoise-{v}.json") for v in ("v3", "v4"))
    assert v4.net["widths"] == [w * 3 // 2 for w in v3.net["widths"]]
    assert {k: v for k, v in v4.net.items() if k != "widths"} == {k: v for k, v in v3.net.items() if k != "widths"}
    assert (v4.data, v4.optim, v4.seed) == (v3.data, v3.optim, v3.seed)
    model = build_net(v4)
    report = load_promoted(model, onnx_weights(REPO / "services" / "models" / "doc-denoise.onnx"))
    assert not report["new"] and not report["adapted"] and len(report["copied"]) == len(model.state_dict())


def test_doc_legs_train_v5_which_is_v4_with_twice_the_colour_pages():
    """v5 changes one thing against v4 (net, loss, crop mix, seed alike): the colour-luma pages' share of the page
    pool doubles (the first v4 leg lightened the colour page's mid-grey ink past its bar), the other kinds giving
    it up; the shares still sum to 1."""
    assert LEG_CONFIGS["doc-denoise"] == "doc-denoise-v5"
    v4, v5 = (TrainConfig.load(CONFIG_DIR / f"doc-denoise-{v}.json") for v in ("v4", "v5"))
    assert (v5.net, v5.optim, v5.seed, v5.tiling) == (v4.net, v4.optim, v4.seed, v4.tiling)
    assert {k: v for k, v in v5.data.items() if k != "page_kinds"} == {k: v for k, v in v4.data.items()
                                                                        if k != "page_kinds"}
    assert v5.data["page_kinds"]["colour"] == 2 * v4.data["page_kinds"]["colour"]
    assert sum(v5.data["page_kinds"].values()) == pytest.approx(1.0)
