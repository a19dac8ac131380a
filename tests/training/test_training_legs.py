"""Training legs: the noise-aware denoiser, warm starts from shipped ONNX weights, time-boxed resumable legs, the gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from export.onnx_export import export_onnx
from training.builders import build_net
from training.config import CHANNELS, CONFIG_DIR, MODEL_NAMES, TrainConfig, leg_config
from training.data.noise import random_noise_with_level
from training.evalsets import condition_sigma, photo_condition
from training.legs import LegSettings, leg_lr, run_leg
from training.nets.noise_aware import NoiseAwareDenoiser
from training.promote import decide, promote_leg, read_legs
from training.train import load_trained
from training.warm_start import load_promoted, onnx_weights

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "services" / "models"


def _photos() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (160, 200, 3), dtype=np.uint8) for _ in range(3)]


def test_noise_levels_are_the_noise_actually_added():
    img = np.full((64, 64, 3), 0.5, np.float32)
    seen = set()
    for seed in range(60):
        clean, noisy, level = random_noise_with_level(np.random.default_rng(seed), img)
        assert level.shape == (64, 64) and clean.shape == noisy.shape == (64, 64, 3)
        if not level.any():
            seen.add("clean")
            assert np.array_equal(clean, noisy)
            continue
        measured = float((noisy - clean).std())
        # JPEG removes part of the noise it is given; every other kind adds exactly the stated level.
        assert measured == pytest.approx(float(level.mean()), rel=0.5, abs=2 / 255) or measured < level.mean()
        if np.allclose(clean[..., 0], clean[..., 1]) and np.allclose(noisy[..., 0], noisy[..., 2]):
            seen.add("gray")
    assert seen == {"clean", "gray"}


def test_photo_eval_conditions_are_fixed_and_distinct():
    a, b = photo_condition("gray σ=25"), photo_condition("gray σ=25")
    name = next(iter(a))
    assert np.array_equal(a[name][1], b[name][1])
    clean, noisy = a[name]
    assert np.array_equal(noisy[..., 0], noisy[..., 1])  # one gray noise field
    assert condition_sigma("JPEG σ=15 q=75") == 15 and condition_sigma("σ=0") == 0
    clean0, noisy0 = photo_condition("σ=0")[name]
    assert np.array_equal(clean0, noisy0)


def _blind_onnx(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    blind = build_net(TrainConfig.load(CONFIG_DIR / "photo-denoise.json")).eval()
    path = tmp_path / "photo-denoise.onnx"
    export_onnx(blind, 3, path, blind.multiple_of)
    return blind, path


def test_warm_start_from_a_blind_onnx_reproduces_it(tmp_path: Path):
    """The noise-map input starts with zero weights: before training, the noise-aware net is the blind one."""
    blind, path = _blind_onnx(tmp_path)
    aware = build_net(TrainConfig.load(CONFIG_DIR / "photo-denoise-aware.json")).eval()
    assert isinstance(aware, NoiseAwareDenoiser)
    report = load_promoted(aware, onnx_weights(path))
    assert report["adapted"] == ["net.head.0.weight"]
    assert report["new"] and all(k.startswith("estimator.") for k in report["new"])
    x = torch.rand(1, 3, 64, 48)
    with torch.no_grad():
        assert torch.allclose(aware(x), blind(x), atol=1e-6)
    doc = build_net(TrainConfig.load(CONFIG_DIR / "doc-denoise.json"))
    with pytest.raises(ValueError, match="none of the promoted weights"):
        load_promoted(doc, onnx_weights(path))


def test_a_widened_net_starts_as_the_narrow_one_and_its_new_channels_learn():
    """Every layer wider in and out: the old weights fill the leading block, new inputs into old outputs are zero.
    Same output before training; the zeros that read new channels get gradient (the new channels are not dead)."""
    from training.nets.unet import UNet, UNetConfig

    torch.manual_seed(0)
    narrow = UNet(UNetConfig(widths=[4, 8, 16], unshuffle=True)).eval()
    wide = UNet(UNetConfig(widths=[6, 12, 24], unshuffle=True)).eval()
    weights = {k: v.detach().numpy() for k, v in narrow.state_dict().items()}
    report = load_promoted(wide, weights)
    assert not report["new"] and "tail.weight" in report["adapted"] and "downs.0.weight" in report["adapted"]
    x = torch.rand(2, 1, 32, 24)
    with torch.no_grad():
        assert torch.allclose(wide(x), narrow(x), atol=1e-6)
    wide.train()
    wide(x).square().mean().backward()
    # tail: old outputs from the new channels; ups.0 (transposed, in × out): new inputs into old outputs
    assert wide.tail.weight.grad[:, 4:].abs().sum() > 0
    assert wide.ups[0].weight.grad[8:, :4].abs().sum() > 0
    # Another kernel size is not a widening: a 1×1 filter would land in the 3×3 filter's corner.
    one_by_one = {**weights, "tail.weight": np.ones((4, 4, 1, 1), np.float32)}
    assert "tail.weight" in load_promoted(wide, one_by_one)["new"]


def test_leg_schedule_is_a_warm_restart_over_the_time_budget():
    assert leg_lr(0.0, 60.0, 0, 1e-3, 1e-6, 10) == pytest.approx(1e-4)
    assert leg_lr(0.0, 60.0, 10, 1e-3, 1e-6, 10) == pytest.approx(1e-3)
    assert leg_lr(30.0, 60.0, 500, 1e-3, 1e-6, 10) == pytest.approx(0.5 * (1e-3 + 1e-6))
    assert leg_lr(90.0, 60.0, 900, 1e-3, 1e-6, 10) == pytest.approx(1e-6)


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_each_leg_config_takes_every_shipped_weight_and_reproduces_the_shipped_graph(model: str):
    """A leg warm-starts from the shipped ONNX by parameter name: every initializer must land in the leg config's
    network — copied, or embedded in a layer the config widened — which must then compute what the shipped graph
    computes."""
    from export.parity import session

    net = build_net(TrainConfig.load(CONFIG_DIR / f"{leg_config(model)}.json")).eval()
    report = load_promoted(net, onnx_weights(SHIPPED / f"{model}.onnx"))
    # Buffers the config computes (colorize's ab bin centres) are folded into constants by the export, so they are
    # not among the initializers; the parity check below covers them.
    new_parameters = [k for k in report["new"] if k in dict(net.named_parameters())]
    assert new_parameters == [], report
    x = np.random.default_rng(0).random((1, CHANNELS[model].inputs, 2 * net.multiple_of, 3 * net.multiple_of),
                                        dtype=np.float32)
    shipped = session(SHIPPED / f"{model}.onnx").run(None, {"input": x})[0]
    with torch.no_grad():
        ours = net(torch.from_numpy(x)).numpy()
    assert np.abs(ours - shipped).max() <= 1e-4


def _smoke_config(tmp_path: Path) -> Path:
    raw = json.loads((CONFIG_DIR / "photo-denoise-aware.json").read_text())
    raw["data"] = {**raw["data"], "crop": 32, "batch_size": 2}
    path = tmp_path / "photo-denoise-aware.json"
    path.write_text(json.dumps(raw))
    return path


def _models_dir(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    entry = next(m for m in json.loads((SHIPPED / "manifest.json").read_text())["models"]
                 if m["name"] == "photo-denoise")
    for f in ("manifest.json", entry["file"], *(v["file"] for v in entry.get("variants", []))):
        shutil.copy(SHIPPED / f, models / f)
    return models


def test_leg_trains_for_its_budget_and_a_rerun_does_not_extend_it(tmp_path: Path):
    config, models = _smoke_config(tmp_path), _models_dir(tmp_path)
    settings = LegSettings(minutes=0.05, threads=1, workers=0, checkpoint_minutes=0.01)
    final = run_leg("photo-denoise", settings, run_dir=tmp_path / "leg", config=config, photos=_photos(),
                    progress=False, models_dir=models)
    model, blob = load_trained(final)
    leg = blob["leg"]
    assert leg["steps"] > 0 and leg["pixels"] == leg["steps"] * 2 * 32 * 32
    # The shipped photo-denoise is the noise-aware network of this config: every tensor starts from it.
    assert leg["init"]["copied"] > 40 and (leg["init"]["adapted"], leg["init"]["new"]) == (0, 0), leg["init"]
    assert 0.04 <= leg["minutes"] <= 0.5
    # The same command again finds the finished leg: no further steps, same weights.
    again = run_leg("photo-denoise", settings, run_dir=tmp_path / "leg", config=config, photos=_photos(),
                    progress=False, models_dir=models)
    _, blob2 = load_trained(again)
    assert blob2["steps"] == leg["steps"]
    assert all(torch.equal(blob["state_dict"][k], blob2["state_dict"][k]) for k in blob["state_dict"])


def test_stop_file_ends_a_leg_early(tmp_path: Path):
    config, models = _smoke_config(tmp_path), _models_dir(tmp_path)
    (tmp_path / "leg").mkdir()
    (tmp_path / "leg" / "STOP").touch()
    final = run_leg("photo-denoise", LegSettings(minutes=10, threads=1, workers=0), run_dir=tmp_path / "leg",
                    config=config, photos=_photos(), progress=False, models_dir=models)
    assert load_trained(final)[1]["steps"] == 0
    # Resumed with a shorter budget, the leg ends by the new one (before: the 10 minutes it started with).
    (tmp_path / "leg" / "STOP").unlink()
    final = run_leg("photo-denoise", LegSettings(minutes=0.03, threads=1, workers=0), run_dir=tmp_path / "leg",
                    config=config, photos=_photos(), progress=False, models_dir=models)
    leg = load_trained(final)[1]["leg"]
    assert leg["steps"] > 0 and leg["minutes"] <= 0.5


def _result(score: float, met: dict[str, bool]) -> dict:
    return {"score": score, "bars": [{"bar": k, "met": v} for k, v in met.items()]}


def test_gate_needs_a_better_score_and_no_bar_lost():
    old = _result(30.0, {"a": True, "b": False})
    assert decide(old, _result(30.5, {"a": True, "b": False})).promote
    assert decide(old, _result(30.5, {"a": True, "b": True})).reason.endswith("newly met: b")
    lost = decide(old, _result(31.0, {"a": False, "b": True}))
    assert not lost.promote and "a" in lost.reason
    assert not decide(old, _result(30.0, {"a": True, "b": False})).promote


@pytest.mark.slow
def test_promote_smoke(tmp_path: Path):
    """A seconds-long leg through the whole gate: export, quick evaluation of both, decision, legs log."""
    config, models = _smoke_config(tmp_path), _models_dir(tmp_path)
    before = (models / "photo-denoise.onnx").read_bytes()
    final = run_leg("photo-denoise", LegSettings(minutes=0.05, threads=1, workers=0, lr=3e-4), run_dir=tmp_path / "leg",
                    config=config, photos=_photos(), progress=False, models_dir=models)
    log = tmp_path / "legs.jsonl"
    decision = promote_leg("photo-denoise", final, models_dir=models, quality_json=tmp_path / "quality.json",
                           log=log, quick=True)
    (record,) = read_legs(log)
    assert record["promoted"] == decision.promote and record["quick"] and record["steps"] > 0
    assert record["peak_lr"] == 3e-4  # a leg's own peak LR (--lr) is logged, not the config's
    assert record["candidate"]["score"] != record["shipped_before"]["score"]
    assert (tmp_path / "leg" / "candidate" / "photo-denoise.onnx").is_file()
    assert ((models / "photo-denoise.onnx").read_bytes() != before) == decision.promote


def test_an_int8_variant_that_loses_a_bar_is_named_and_a_faithful_one_is_not():
    from training.promote import int8_bars_lost

    fp32 = {"bars": [{"bar": "clean ≥ 40 dB", "met": True}, {"bar": "above TV", "met": True},
                     {"bar": "CBM3D", "met": False}]}
    faithful = {"bars": [{"bar": "clean ≥ 40 dB", "met": True}, {"bar": "above TV", "met": True},
                         {"bar": "CBM3D", "met": False}]}
    lossy = {"bars": [{"bar": "clean ≥ 40 dB", "met": False}, {"bar": "above TV", "met": True},
                      {"bar": "CBM3D", "met": False}]}
    assert int8_bars_lost(fp32, faithful) == []
    assert int8_bars_lost(fp32, lossy) == ["clean ≥ 40 dB"]


def test_quality_markdown_keeps_figures_of_an_older_evaluation_version():
    """quality.json holds every model; a promotion re-evaluates one. The others' figures may come from an older
    evaluation whose tables lack today's keys: the report must still be written (it crashed a promotion)."""
    from training.evaluate import MODULES, to_markdown

    old = {"eval_version": 1, "summary": {"psnr_db": 31.16}, "bars": [], "onnx_s_per_mp": 0.4}
    text = to_markdown({"models": {"watermark": old}})
    assert "evaluation version 1" in text and f"version {MODULES['watermark'].VERSION}" in text
    assert "31.16" in text


def test_the_legs_curve_shows_the_latest_evaluation_versions_scores_at_all_the_pixels_accumulated():
    from training.promote import score_curve

    def leg(version, pixels, before, after, promoted):
        return {"eval_version": version, "pixels": pixels * 1e9, "shipped_before": {"score": before},
                "candidate": {"score": after}, "promoted": promoted}

    legs = [leg(2, 1.0, 30.0, 31.0, True), leg(2, 2.0, 31.0, 30.5, False),  # version 2 scores: left out
            leg(3, 0.5, 35.0, 36.0, True), leg(3, 1.5, 36.0, 35.5, False)]
    xs, cand, shipped = score_curve(legs)
    assert xs == pytest.approx([3.0, 3.5, 5.0]) and cand == [36.0, 35.5] and shipped == [35.0, 36.0, 36.0]
    assert score_curve(legs[:2]) == ([0.0, 1.0, 3.0], [31.0, 30.5], [30.0, 31.0, 31.0])
