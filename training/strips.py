"""Before/after strips: per model, a few held-out examples as input | ours | reference, for the README.

People judge a restoration by looking at it. Each strip is cut from the evaluation sets (never seen in training),
so what it shows is what the quality table measures: a dirty page and an already-clean typewriter page (it must
come back untouched), a photo at σ 25 and one at σ 5, watermarked photos, gray photos. Written by
``python -m training.evaluate`` (fp32, full runs) and by a promotion, to ``training/results/<model>-strip.{png,jpg}``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .quality.common import RESULTS

TILE = 224  # pixels per example side: three tiles across stay readable in a README column
LABEL_BAND = 18

Example = tuple[str, np.ndarray, np.ndarray]  # caption, model input, reference (what a perfect output would be)


def _crop(img: np.ndarray, top: int, left: int, side: int = TILE) -> np.ndarray:
    top = min(max(0, top), img.shape[0] - side)
    left = min(max(0, left), img.shape[1] - side)
    return img[top:top + side, left:left + side]


def _text_window(page: np.ndarray) -> tuple[int, int]:
    """Top-left of the TILE window holding the most ink: a strip of blank margin shows nothing."""
    ink = (page < 0.5).astype(np.float64)
    step = TILE // 2
    best, where = -1.0, (0, 0)
    for top in range(0, page.shape[0] - TILE + 1, step):
        for left in range(0, page.shape[1] - TILE + 1, step):
            amount = ink[top:top + TILE, left:left + TILE].mean()
            if amount > best:
                best, where = amount, (top, left)
    return where


def examples(name: str) -> list[Example]:
    """The strip's examples for model ``name``, each already cropped to TILE × TILE."""
    from . import evalsets as E

    if name == "doc-denoise":
        page = E.eval_pages(1)[0]
        top, left = _text_window(page.clean)
        clean_in = next(p for p in E.clean_in_pages(quick=True) if p.kind == "typewriter")
        ct, cl = _text_window(clean_in.image)
        return [("dirty scan", _crop(page.dirty, top, left), _crop(page.clean, top, left)),
                ("clean typewriter page (do no harm)", _crop(clean_in.image, ct, cl), _crop(clean_in.image, ct, cl))]
    if name == "photo-denoise":
        out = []
        for condition, index in (("σ=25", 0), ("σ=5", 1)):
            photo_name, (clean, noisy) = list(E.photo_condition(condition).items())[index]
            top, left = clean.shape[0] // 3, clean.shape[1] // 3
            caption = f"{photo_name}, noise {condition.replace('σ=', 'sigma ')}"  # PIL's default font has no σ
            out.append((caption, _crop(noisy, top, left), _crop(clean, top, left)))
        return out
    if name == "watermark":
        out = []
        for photo_name, (clean, marked, mask) in list(E.watermarked_photos().items())[:2]:
            ys, xs = np.nonzero(mask)
            top, left = (int(ys.mean()) - TILE // 2, int(xs.mean()) - TILE // 2) if ys.size else (0, 0)
            out.append((photo_name, _crop(marked, top, left), _crop(clean, top, left)))
        return out
    if name == "colorize":
        out = []
        for photo_name, rgb in list(E.eval_photos().items())[:2]:
            top, left = rgb.shape[0] // 4, rgb.shape[1] // 4
            crop = _crop(rgb, top, left)
            out.append((photo_name, E.luma601(crop).astype(np.float32), crop))
        return out
    raise ValueError(f"no strip examples for model {name!r}")


def _to_rgb8(img: np.ndarray) -> np.ndarray:
    img = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.round(img * 255.0).astype(np.uint8)


def render(rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> Image.Image:
    """Rows of (caption, input, ours, reference) as one image with a caption band above each row."""
    width = 3 * TILE + 2 * 4
    height = len(rows) * (TILE + LABEL_BAND)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (caption, inp, ours, ref) in enumerate(rows):
        y = i * (TILE + LABEL_BAND)
        draw.text((4, y + 3), f"{caption}:  input | ours | reference", fill="black")
        for j, tile in enumerate((inp, ours, ref)):
            x = j * (TILE + 4)
            if j:  # a gray gutter: white page tiles would otherwise run into each other
                draw.rectangle((x - 4, y + LABEL_BAND, x - 1, y + LABEL_BAND + TILE - 1), fill=(128, 128, 128))
            canvas.paste(Image.fromarray(_to_rgb8(tile)), (x, y + LABEL_BAND))
    return canvas


def write_strip(name: str, model: Callable[[np.ndarray], np.ndarray], out_dir: Path = RESULTS) -> Path:
    """Runs ``model`` on the examples of ``name`` and writes ``<name>-strip.png``; returns its path."""
    rows = [(caption, inp, model(inp), ref) for caption, inp, ref in examples(name)]
    out_dir.mkdir(parents=True, exist_ok=True)
    image = render(rows)
    if name == "doc-denoise":  # gray pages: lossless PNG is small
        path = out_dir / f"{name}-strip.png"
        image.convert("L").save(path, optimize=True)
    else:  # photos: JPEG at a quality where noise and colour still show, a quarter of a PNG's bytes in the repo
        path = out_dir / f"{name}-strip.jpg"
        image.save(path, quality=92, subsampling=0, optimize=True)
    return path
