"""Training configuration: one JSON file per production model in ``training/configs/``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
RUNS_DIR = Path(__file__).resolve().parent / "runs"
MODEL_NAMES = ("doc-denoise", "photo-denoise", "colorize", "watermark")


class Channels(NamedTuple):
    inputs: int
    outputs: int


# Image channels in and out of each kind's network (1: gray, 3: RGB): the one table that the network builder, the
# data tasks, the evaluation, the ONNX export and the manifest read.
CHANNELS: dict[str, Channels] = {"doc-denoise": Channels(1, 1), "photo-denoise": Channels(3, 3),
                                 "colorize": Channels(1, 3), "watermark": Channels(3, 3)}
# The config (training/configs/NAME.json) each model's training legs (training/legs.py) continue with: the
# architecture and data of the next promoted weights. Until a leg of it is promoted, the shipped ONNX comes from the
# run named in export/__main__.py: SHIPPED_RUNS (training/README.md has the comparisons).
LEG_CONFIGS = {"colorize": "colorize-v3", "doc-denoise": "doc-denoise-v5", "watermark": "watermark-v5",
               "photo-denoise": "photo-denoise-aware"}


@dataclass
class OptimConfig:
    lr: float = 2e-3
    min_lr: float = 1e-5
    warmup_steps: int = 200
    steps: int = 4000
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    # The name of the training objective in objectives.OBJECTIVES (the registry says what each one is):
    # "charbonnier" | "l1" | "mse" | "ink_charbonnier" | "unblend_aux" | "noise_aware" | "lab_ab_l1" | "lab_ab_mse" |
    # "lab_ab_class".
    loss: str = "charbonnier"
    # Weights of the objectives' secondary terms: clean_weight ("unblend_aux") weighs the squared error on pixels
    # without watermark (true opacity 0) relative to marked ones; alpha_weight is the weight of the second term
    # (opacity BCE, ink term, noise-level error); marked_weight ("unblend_aux") weighs the opacity BCE on marked
    # pixels relative to unmarked ones.
    clean_weight: float = 1.0
    alpha_weight: float = 0.1
    marked_weight: float = 1.0


@dataclass
class TrainConfig:
    name: str
    kind: str  # "doc-denoise" | "photo-denoise" | "colorize" | "watermark": which task and model builder
    seed: int = 0
    net: dict[str, Any] = field(default_factory=dict)  # UNetConfig fields (+ "space", "chroma_gain" for colorize)
    data: dict[str, Any] = field(default_factory=dict)  # task fields (crop, batch_size, …)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint_every: int = 250
    validate_every: int = 250
    threads: int = 2
    tiling: dict[str, int] = field(default_factory=lambda: {"tile_size": 256, "overlap": 32})
    description: str = ""
    # Optional: a finished run beside this one (training/runs/<init_from>/model.pt) whose weights start this run.
    init_from: str | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TrainConfig":
        raw = dict(raw)
        raw["optim"] = OptimConfig(**raw.get("optim", {}))
        return cls(**raw)

    @classmethod
    def load(cls, path: Path) -> "TrainConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_config_path(name: str) -> Path:
    return CONFIG_DIR / f"{name}.json"


def leg_config(model: str) -> str:
    """The config name a model's training legs use."""
    return LEG_CONFIGS.get(model, model)
