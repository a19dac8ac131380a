"""Smoke runs of every production config: a few steps, checkpoints, curves, and exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training.config import CHANNELS, CONFIG_DIR, MODEL_NAMES, TrainConfig
from training.train import load_trained, lr_at, train

SMOKE_DATA = {"doc-denoise": {"crop": 48, "batch_size": 2, "pages": 2},
              "photo-denoise": {"crop": 48, "batch_size": 2},
              "watermark": {"crop": 64, "batch_size": 2, "pages": 2},
              "colorize": {"crop": 64, "batch_size": 2}}


def _photos() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (160, 200, 3), dtype=np.uint8) for _ in range(3)]


CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def smoke_config(name: str, steps: int = 3) -> TrainConfig:
    cfg = TrainConfig.load(CONFIG_DIR / f"{name}.json")
    raw = cfg.to_dict()
    raw["data"] = {**raw["data"], **SMOKE_DATA[cfg.kind]}
    raw["optim"]["steps"] = steps
    raw["optim"]["warmup_steps"] = 1
    raw["checkpoint_every"] = raw["validate_every"] = 2
    raw["threads"] = 1
    return TrainConfig.from_dict(raw)


def test_every_model_has_a_config():
    for name in MODEL_NAMES:
        cfg = TrainConfig.load(CONFIG_DIR / f"{name}.json")
        assert cfg.name == name and cfg.optim.steps > 0 and cfg.description


def _smoke_train(cfg: TrainConfig, runs: Path) -> Path:
    """Trains ``cfg`` in ``runs/<name>``, first smoke-training the run it fine-tunes from (if any) beside it."""
    if cfg.init_from and not (runs / cfg.init_from / "model.pt").is_file():
        _smoke_train(smoke_config(cfg.init_from), runs)
    return train(cfg, run_dir=runs / cfg.name, progress=False, photos=_photos())


@pytest.mark.parametrize("name", CONFIGS)
def test_smoke_train(name: str, tmp_path: Path):
    cfg = smoke_config(name)
    final = _smoke_train(cfg, tmp_path)
    run_dir = final.parent
    assert final.is_file() and (run_dir / "last.ckpt").is_file() and (run_dir / "loss.png").stat().st_size > 1000
    history = json.loads((run_dir / "history.json").read_text())
    assert history["step"] == [1, 2, 3] and all(np.isfinite(history["loss"]))
    model, blob = load_trained(final)
    assert blob["steps"] == 3 and blob["config"] == cfg.to_dict()
    c_in = CHANNELS[cfg.kind].inputs
    m = model.multiple_of
    out, code = model.forward_with_code(torch.rand(1, c_in, 2 * m, 3 * m))
    assert out.shape[-2:] == (2 * m, 3 * m) and code.dim() == 4


def test_resume_continues_exactly(tmp_path: Path):
    cfg = smoke_config("doc-denoise", steps=4)
    train(cfg, run_dir=tmp_path / "straight", progress=False)
    train(cfg, run_dir=tmp_path / "killed", progress=False, max_steps=2)  # "killed" after step 2
    ckpt = torch.load(tmp_path / "killed" / "last.ckpt", weights_only=False)
    assert ckpt["step"] == 2
    train(cfg, run_dir=tmp_path / "killed", progress=False)  # the same command again
    a = json.loads((tmp_path / "straight" / "history.json").read_text())
    b = json.loads((tmp_path / "killed" / "history.json").read_text())
    assert b["step"] == [1, 2, 3, 4]
    assert np.allclose(a["loss"], b["loss"], rtol=1e-5, atol=1e-7)


def test_resume_refuses_another_config(tmp_path: Path):
    cfg = smoke_config("doc-denoise", steps=2)
    train(cfg, run_dir=tmp_path, progress=False)
    other = smoke_config("doc-denoise", steps=2)
    other.optim.lr *= 2
    with pytest.raises(SystemExit):
        train(other, run_dir=tmp_path, progress=False)


def test_lr_schedule_warms_up_then_decays():
    cfg = TrainConfig(name="x", kind="doc-denoise")
    cfg.optim.steps, cfg.optim.warmup_steps = 1000, 100
    lrs = [lr_at(s, cfg) for s in range(1000)]
    assert lrs[0] < lrs[99] == pytest.approx(cfg.optim.lr)
    assert lrs[500] < lrs[100] and lrs[-1] == pytest.approx(cfg.optim.min_lr, abs=1e-6)


def test_fine_tune_starts_from_the_parent_run(tmp_path: Path):
    child = smoke_config("watermark-v2", steps=0)
    parent = _smoke_train(smoke_config(child.init_from), tmp_path)
    _smoke_train(child, tmp_path)
    start, _ = load_trained(tmp_path / child.name / "model.pt")
    trained, _ = load_trained(parent)
    for key, value in trained.state_dict().items():
        assert torch.equal(start.state_dict()[key], value), key


def test_fine_tune_without_its_parent_says_what_to_train(tmp_path: Path):
    with pytest.raises(SystemExit, match="train watermark first"):
        train(smoke_config("watermark-v2"), run_dir=tmp_path / "watermark-v2", progress=False, photos=_photos())
