"""Builds the network, the batch source and the optimiser for a :class:`TrainConfig` (the one place that maps
kinds to code)."""

from __future__ import annotations

import torch
from torch import nn

from .config import CHANNELS, TrainConfig
from .data.sources import load_training_photos
from .data.tasks import ColorizeTask, DocDenoiseTask, PhotoDenoiseTask, WatermarkTask, photo_cache_dir
from .nets.colorizer import Colorizer
from .nets.noise_aware import NoiseAwareDenoiser
from .nets.unet import UNet, UNetConfig


def build_net(cfg: TrainConfig) -> nn.Module:
    net = dict(cfg.net)
    space = net.pop("space", "lab")
    gain = net.pop("chroma_gain", 1.0)
    luma_lock = bool(net.pop("luma_lock", False))
    chroma_filter = int(net.pop("chroma_filter", 0))
    class_head = net.pop("class_head", None)  # colorize: classification over quantised ab (nets/colorizer.ClassHead)
    noise_estimator = net.pop("noise_estimator", None)  # {width, depth, smooth}: a noise-aware denoiser
    # "auto": calibrated after training (see train.py)
    chroma_gain = 1.0 if isinstance(gain, str) else float(gain)
    channels = CHANNELS[cfg.kind]
    unet_cfg = UNetConfig(**{"in_channels": channels.inputs, "out_channels": channels.outputs, **net})
    if cfg.kind == "colorize":
        return Colorizer(unet_cfg, space=space, chroma_gain=chroma_gain, luma_lock=luma_lock,
                         chroma_filter=chroma_filter, class_head=class_head)
    if noise_estimator is not None:
        return NoiseAwareDenoiser(unet_cfg, **{f"estimator_{k}": v for k, v in noise_estimator.items()})
    return UNet(unet_cfg)


def build_task(cfg: TrainConfig, photos: list | None = None):  # -> one of the tasks in data.tasks
    data = dict(cfg.data)
    if cfg.kind == "doc-denoise":
        return DocDenoiseTask(seed=cfg.seed, **data)
    # natural_only: natural photographs only; photo_packages: also data/photo_packages.py's Debian photo packages.
    natural_only, photo_packages = bool(data.pop("natural_only", False)), bool(data.pop("photo_packages", False))
    if photos is None:
        photos = load_training_photos(photo_cache_dir(), natural_only=natural_only, photo_packages=photo_packages)
    if cfg.kind == "photo-denoise":
        return PhotoDenoiseTask(photos, seed=cfg.seed, **data)
    if cfg.kind == "watermark":
        return WatermarkTask(photos, seed=cfg.seed, **data)
    if cfg.kind == "colorize":
        return ColorizeTask(photos, seed=cfg.seed, **data)
    raise ValueError(f"unknown model kind {cfg.kind!r}")


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW at the config's peak LR (the loops set each step's LR themselves)."""
    return torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
