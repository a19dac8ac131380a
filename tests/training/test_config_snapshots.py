"""Every training config still trains as recorded: same loss on a fixed batch, same parameter names and shapes
(the warm starts from shipped ONNX files match on them), same outputs (see snapshots.py for what is recorded and
how to record it again)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.training.snapshots import CONFIGS, SNAPSHOTS, current_loss, fixed_batch, snapshot
from training.builders import build_net
from training.config import CONFIG_DIR, TrainConfig
from training.objectives import OBJECTIVES, objective_for

RECORDED = json.loads(SNAPSHOTS.read_text())


def test_every_config_is_recorded():
    assert sorted(RECORDED) == CONFIGS


@pytest.mark.parametrize("name", CONFIGS)
def test_config_matches_its_snapshot(name: str):
    torch.set_num_threads(1)
    now = snapshot(TrainConfig.load(CONFIG_DIR / f"{name}.json"), build_net, current_loss)
    was = RECORDED[name]
    assert (now["parameters"], now["parameters_sha256"]) == (was["parameters"], was["parameters_sha256"]), \
        "parameter names or shapes changed: warm starts from the shipped ONNX files and running checkpoints break"
    assert now["loss"] == pytest.approx(was["loss"], rel=1e-5, abs=1e-7)
    assert sorted(now["outputs"]) == sorted(was["outputs"])
    for key, values in was["outputs"].items():
        assert now["outputs"][key] == pytest.approx(values, rel=1e-5, abs=1e-6), key


def test_every_config_loss_is_registered_and_unknown_names_are_refused():
    assert {TrainConfig.load(CONFIG_DIR / f"{n}.json").optim.loss for n in CONFIGS} <= set(OBJECTIVES)
    cfg = TrainConfig.load(CONFIG_DIR / "doc-denoise.json")
    cfg.optim.loss = "charbonier"
    with pytest.raises(ValueError, match="unknown loss 'charbonier'"):
        objective_for(cfg.optim)


def test_an_objective_refuses_a_network_it_cannot_train():
    colorize = TrainConfig.load(CONFIG_DIR / "colorize.json")
    doc = TrainConfig.load(CONFIG_DIR / "doc-denoise.json")
    x, y = fixed_batch(colorize)
    with pytest.raises(TypeError, match="colorizer"):
        objective_for(colorize.optim)(build_net(doc), clean=y, inputs=x)
