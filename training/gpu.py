"""Training legs on a lent GPU machine, and the data pack they need (``training/gpu.sh`` drives both).

The device machine has torch with CUDA, numpy, OpenCV, Pillow, scikit-image and matplotlib, but none of the Debian
packages the training photos and fonts come from, and it cannot fetch anything. So, here:

    python -m training.gpu pack            # .gpu/photos/… (every training photo, JPEG q90, ≤ 768 px) + .gpu/fonts/…

and there (the working tree travels, ``.gpu`` is carried):

    python3 -m training.gpu run --out $OUT --minutes 1.75

trains one leg per shipped model from its promoted ONNX weights (``training.legs.run_leg`` on CUDA, bf16 autocast,
larger batches, many data workers) and writes ``$OUT/<model>.pt``. Back here, ``python -m training promote MODEL
--run-dir .device/…`` puts each through the same gate as a CPU leg.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

PACK = Path(__file__).resolve().parents[1] / ".gpu"


def pack(out: Path = PACK, quality: int = 90) -> dict[str, int]:
    """Writes the training photos and fonts under ``out``; returns counts and bytes."""
    from PIL import Image

    from .data.fonts import TRAIN_SPECS, training_fonts
    import hashlib

    from .data.sources import _is_colourful, _load_rgb, training_photo_sources

    photos_dir, fonts_dir = out / "photos", out / "fonts"
    shutil.rmtree(photos_dir, ignore_errors=True)
    shutil.rmtree(fonts_dir, ignore_errors=True)
    n = 0
    seen: set[str] = set()
    for source in training_photo_sources():
        img = _load_rgb(source.path)
        if img is None or not _is_colourful(img):  # the filters of sources.load_training_photos
            continue
        digest = hashlib.sha256(img[::8, ::8].tobytes()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        # Keep the path's tail (backgrounds/mate/nature/x.jpg): sources.is_natural_photo matches on it.
        parts = source.path.parts
        tail = Path(*parts[3:]) if parts[:3] == ("/", "usr", "share") else Path(source.origin) / source.path.name
        target = (photos_dir / tail).with_suffix(".jpg")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(target, quality=quality, subsampling=0)
        n += 1
    folders = {spec[0]: spec[1] for spec in TRAIN_SPECS}
    for family in training_fonts():
        folder = fonts_dir / folders.get(family.name, "dejavu")
        folder.mkdir(parents=True, exist_ok=True)
        for path in (family.regular, family.bold, family.italic):
            shutil.copyfile(path, folder / path.name)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"photos": n, "bytes": size}


def run(out: Path, minutes: float, models: list[str], workers: int, batch_scale: int,
        device: str = "cuda") -> list[dict]:
    import torch

    from .legs import LEGS_LOG, LegSettings, leg_count, run_leg

    os.environ.setdefault("IMGRESTORE_PHOTO_PACK", str(PACK / "photos"))
    os.environ.setdefault("IMGRESTORE_FONT_DIR", str(PACK / "fonts"))
    torch.backends.cudnn.benchmark = True  # fixed crop sizes: let cuDNN pick the fastest kernels once
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for name in models:
        started = time.perf_counter()
        settings = LegSettings(minutes=minutes, threads=4, workers=workers, device=device, batch_scale=batch_scale,
                               checkpoint_minutes=minutes + 1)
        run_dir = Path("/tmp/gpu-legs") / name
        shutil.rmtree(run_dir, ignore_errors=True)  # a fresh leg each call
        model_pt = run_leg(name, settings, run_dir=run_dir, leg_index=leg_count(name, LEGS_LOG))
        shutil.copyfile(model_pt, out / f"{name}.pt")
        blob = torch.load(model_pt, map_location="cpu", weights_only=False)
        done.append({"model": name, **{k: v for k, v in blob["leg"].items() if k != "init"},
                     "wall_s": round(time.perf_counter() - started, 1)})
        print(json.dumps(done[-1]), flush=True)
        (out / "summary.json").write_text(json.dumps(done, indent=1))
    return done


def main(argv: list[str] | None = None) -> int:
    from .config import MODEL_NAMES

    p = argparse.ArgumentParser(prog="python -m training.gpu")
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("pack", help="photos and fonts for the GPU machine, under .gpu/")
    k.add_argument("--out", type=Path, default=PACK)
    r = sub.add_parser("run", help="one CUDA leg per model (on the GPU machine)")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--minutes", type=float, default=1.75, help="per model")
    r.add_argument("--workers", type=int, default=14, help="data-generation processes")
    r.add_argument("--batch-scale", type=int, default=8, help="batch = this × the config's batch size")
    r.add_argument("--device", default="cuda", help="cpu: a dry run of this script here")
    r.add_argument("models", nargs="*", default=list(MODEL_NAMES))
    args = p.parse_args(argv)
    if args.cmd == "pack":
        print(json.dumps(pack(args.out)))
    else:
        run(args.out, args.minutes, args.models, args.workers, args.batch_scale, args.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
