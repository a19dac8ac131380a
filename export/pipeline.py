"""Export one trained model: ONNX file, parity check, tiling from the receptive field, manifest entry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from training.config import CHANNELS, TrainConfig
from training.nets.unet import conv_flops_per_pixel, count_parameters

from .manifest import EntryInfo, make_entry, metrics_for, read_manifest, sha256_file, upsert, write_manifest
from .onnx_export import export_onnx
from .parity import check_parity, random_inputs
from .receptive_field import effective_radius


def real_inputs(name: str, multiple_of: int) -> list[tuple[str, np.ndarray]]:
    """A real image of the model's kind, cropped to a multiple of ``multiple_of``."""
    if name == "doc-denoise":
        from training.data.degrade import corrupt_page
        from training.data.fonts import training_fonts
        from training.data.pages import render_page

        rng = np.random.default_rng(7)
        page = render_page(rng, training_fonts(), 320, 416)
        img = corrupt_page(rng, page)[None, None]
    else:
        from PIL import Image
        from skimage import data

        rgb = data.astronaut().astype(np.float32) / 255.0  # any real photo works for parity
        rgb = np.asarray(Image.fromarray(data.astronaut()).resize((256, 200)), np.float32) / 255.0
        if CHANNELS[name].inputs == 1:
            img = (rgb @ np.array([0.299, 0.587, 0.114], np.float32))[None, None]
        else:
            img = rgb.transpose(2, 0, 1)[None]
    h = img.shape[2] // multiple_of * multiple_of
    w = img.shape[3] // multiple_of * multiple_of
    return [("real", np.ascontiguousarray(img[:, :, :h, :w], dtype=np.float32))]


def architecture(cfg: TrainConfig) -> str:
    n = dict(cfg.net)
    parts = ["residual U-Net" if n.get("residual", True) else "U-Net",
             f"widths {n.get('widths')}", f"{n.get('convs_per_block', 2)} conv3x3/res-block",
             "strided-conv down, transposed-conv up, additive skips, LeakyReLU"]
    if n.get("unshuffle"):
        parts.insert(1, "pixel-unshuffle x2 (runs at half resolution)")
    if n.get("paper_white"):
        parts.append(f"outputs >= {n['paper_white']} made exactly white")
    if cfg.kind == "colorize":
        parts.append(f"{n.get('space', 'lab')} head" + (" with Lab->sRGB in graph" if n.get("space", "lab") == "lab" else ""))
        if n.get("class_head"):
            h = n["class_head"]
            parts.append(f"ab classification head ({h.get('bin_size', 10)}-unit bins, annealed mean T="
                         f"{h.get('temperature', 0.38)}, at 1/{2 * h.get('pool', 2)} resolution)")
    return ", ".join(parts)


def tiling(cfg: TrainConfig, radius: int, multiple_of: int) -> dict[str, int]:
    tile = int(cfg.tiling.get("tile_size", 256))
    tile = max(multiple_of, tile // multiple_of * multiple_of)
    overlap = max(int(cfg.tiling.get("overlap", 32)), radius)
    overlap = -(-overlap // multiple_of) * multiple_of  # round up: the service pads tiles to multiple_of
    return {"tile_size": tile, "overlap": min(overlap, tile // 2 - multiple_of), "multiple_of": multiple_of}


def _entry(name: str, model: nn.Module, blob: dict[str, Any], onnx_path: Path, quality: Path, version: str,
           radius: int) -> dict[str, Any]:
    cfg = TrainConfig.from_dict(blob["config"])
    mult = model.multiple_of
    info = EntryInfo(
        name=name, version=version, file=onnx_path, tiling=tiling(cfg, radius, mult),
        architecture=architecture(cfg), parameters=count_parameters(model),
        gflop_per_megapixel=conv_flops_per_pixel(model, CHANNELS[name].inputs) / 1e3,
        training={"data": cfg.description, "command": blob["command"], "config": f"training/configs/{cfg.name}.json",
                  "seed": cfg.seed, "steps": blob["steps"], "wall_time_s": blob["wall_seconds"],
                  "loss": cfg.optim.loss, "final_val_psnr_db": blob.get("val_psnr")},
        metrics=metrics_for(name, sha256_file(onnx_path), quality),
    )
    entry = make_entry(info)
    entry["receptive_field_radius"] = radius
    return entry


def export_model(name: str, model: nn.Module, blob: dict[str, Any], out_dir: Path, quality: Path,
                 version: str) -> dict[str, Any]:
    onnx_path = out_dir / f"{name}.onnx"
    mult = model.multiple_of
    export_onnx(model, CHANNELS[name].inputs, onnx_path, mult)
    report = check_parity(model, onnx_path, random_inputs(CHANNELS[name].inputs, mult) + real_inputs(name, mult))
    radius = effective_radius(model, CHANNELS[name].inputs)
    entry = _entry(name, model, blob, onnx_path, quality, version, radius)
    entry["parity_max_abs_error"] = float(f"{report.max_abs_error:.3g}")
    manifest_path = out_dir / "manifest.json"
    write_manifest(manifest_path, upsert(read_manifest(manifest_path), entry))
    return entry


def refresh_entry(name: str, model: nn.Module, blob: dict[str, Any], out_dir: Path, quality: Path,
                  version: str) -> dict[str, Any]:
    manifest_path = out_dir / "manifest.json"
    manifest = read_manifest(manifest_path)
    old = next((m for m in manifest["models"] if m["name"] == name), {})
    onnx_path = out_dir / f"{name}.onnx"
    radius = old.get("receptive_field_radius") or effective_radius(model, CHANNELS[name].inputs)
    entry = _entry(name, model, blob, onnx_path, quality, old.get("version", version), radius)
    if "parity_max_abs_error" in old:
        entry["parity_max_abs_error"] = old["parity_max_abs_error"]
    # Quantised variants stay while they were made from this very fp32 file (export.quantize records it).
    variants = [v for v in old.get("variants", []) if v.get("source_sha256") == entry["sha256"]]
    for variant in variants:
        evaluated = quality.with_name(f"quality-{variant['precision']}.json")
        variant["metrics"] = metrics_for(name, variant["sha256"], evaluated) or variant.get("metrics", {})
    if variants:
        entry["variants"] = variants
    write_manifest(manifest_path, upsert(manifest, entry))
    return entry
