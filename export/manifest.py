"""Writes ``services/models/manifest.json`` entries (schema_version 1; the service's ``Manifest`` is the schema)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.config import CHANNELS

# name -> (task, profile); the input and output colour spaces follow from training.config.CHANNELS.
MODEL_CONTRACT: dict[str, tuple[str, str | None]] = {
    "doc-denoise": ("denoise", "document"),
    "photo-denoise": ("denoise", "photo"),
    "colorize": ("colorize", None),
    "watermark": ("watermark", None),
}
COLOR_SPACES = {1: "gray", 3: "rgb"}
SCHEMA_VERSION = 1


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tensor_spec(name: str, channels: int) -> dict[str, Any]:
    return {"name": name, "channels": channels, "color_space": COLOR_SPACES[channels], "value_range": [0, 1],
            "layout": "NCHW"}


@dataclass
class EntryInfo:
    name: str
    version: str
    file: Path
    tiling: dict[str, int]
    architecture: str
    parameters: int
    gflop_per_megapixel: float
    training: dict[str, Any]
    metrics: dict[str, Any]


def make_entry(info: EntryInfo) -> dict[str, Any]:
    task, profile = MODEL_CONTRACT[info.name]
    channels = CHANNELS[info.name]
    return {
        "name": info.name,
        "version": info.version,
        "task": task,
        "profile": profile,
        "file": info.file.name,
        "sha256": sha256_file(info.file),
        "input": tensor_spec("input", channels.inputs),
        "output": tensor_spec("output", channels.outputs),
        "tiling": info.tiling,
        "architecture": info.architecture,
        "parameters": info.parameters,
        "gflop_per_megapixel": round(info.gflop_per_megapixel, 2),
        "training": info.training,
        "metrics": info.metrics,
    }


def read_manifest(path: Path) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    return {"schema_version": SCHEMA_VERSION, "models": []}


def upsert(manifest: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """Replaces the entry of the same name (or appends), keeping the contract's model order."""
    models = [m for m in manifest.get("models", []) if m["name"] != entry["name"]] + [entry]
    order = {n: i for i, n in enumerate(MODEL_CONTRACT)}
    models.sort(key=lambda m: order.get(m["name"], len(order)))
    return {"schema_version": SCHEMA_VERSION, "models": models}


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    path.write_text(json.dumps(manifest, indent=2) + "\n")


def metrics_for(name: str, sha256: str, quality_json: Path) -> dict[str, Any]:
    """The evaluation summary of this exact file (matched by sha256), or {} when it was not evaluated yet."""
    if not quality_json.is_file():
        return {}
    data = json.loads(quality_json.read_text())
    model = data.get("models", {}).get(name)
    if not model or model.get("sha256") != sha256:
        return {}
    return model.get("summary", {})
