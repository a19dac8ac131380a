"""`imgrestore run` on local folders: in-process, no Redis, no S3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def _write(path: Path, mode: str, fmt: str, size=(80, 60), seed=0) -> None:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], len(mode))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(path, format=fmt)


def _run(env: dict, *args: str) -> subprocess.CompletedProcess:
    # No Redis or S3 settings at all: the embedded mode must not need them.
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("IMGRESTORE_", "AWS_"))}
    return subprocess.run([sys.executable, "-m", "services.cli", "run", *args], env={**clean, **env},
                          capture_output=True, text=True, timeout=300)


def test_folder_with_mixed_formats_and_a_corrupt_file(tmp_path, tiny_model_dir):
    src = tmp_path / "scans"
    _write(src / "a.png", "L", "PNG")
    _write(src / "b.jpg", "RGB", "JPEG", seed=1)
    _write(src / "sub" / "c.tif", "L", "TIFF", seed=2)
    _write(src / "sub" / "deeper" / "d.webp", "RGBA", "WEBP", seed=3)
    _write(src / "e.bmp", "RGB", "BMP", seed=4)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (src / "notes.txt").write_text("not an image; skipped because of its suffix")
    out = tmp_path / "out"

    result = _run({"IMGRESTORE_MODEL_DIR": str(tiny_model_dir)}, "--task", "denoise", "--json", str(src), "-o", str(out))

    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert summary["succeeded"] == 5 and summary["failed"] == 1
    assert summary["failures"][0]["input"].endswith("broken.png")
    assert summary["failures"][0]["type"] == "image_decode"
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["a.png", "b.jpg", "e.bmp", "sub/c.tif", "sub/deeper/d.webp"]
    assert Image.open(out / "sub" / "deeper" / "d.webp").mode == "RGBA"
    assert not list(out.rglob(".*.part"))  # no temp files left behind


def test_all_good_exits_zero_and_flat_folder_gives_flat_outputs(tmp_path, tiny_model_dir):
    src = tmp_path / "photos"
    for i in range(3):
        _write(src / f"p{i}.png", "RGB", "PNG", seed=i)
    out = tmp_path / "restored"
    result = _run({"IMGRESTORE_MODEL_DIR": str(tiny_model_dir)}, "--task", "colorize", "--format", "jpg",
                  str(src), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["p0.jpg", "p1.jpg", "p2.jpg"]
    assert "3 restored" in result.stderr


def test_colliding_outputs_are_refused_before_any_work(tmp_path, tiny_model_dir):
    _write(tmp_path / "x" / "same.png", "L", "PNG")
    _write(tmp_path / "y" / "same.png", "L", "PNG")
    result = _run({"IMGRESTORE_MODEL_DIR": str(tiny_model_dir)}, "--task", "denoise",
                  str(tmp_path / "x"), str(tmp_path / "y"), "-o", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "would both be written to" in result.stderr
    assert not (tmp_path / "out").exists()


def test_output_inside_the_input_folder_is_not_reprocessed(tmp_path, tiny_model_dir):
    src = tmp_path / "in"
    _write(src / "a.png", "L", "PNG")
    env = {"IMGRESTORE_MODEL_DIR": str(tiny_model_dir)}
    assert _run(env, "--task", "denoise", str(src), "-o", str(src / "out")).returncode == 0
    second = _run(env, "--task", "denoise", "--json", str(src), "-o", str(src / "out"))
    assert json.loads(second.stdout)["succeeded"] == 1
