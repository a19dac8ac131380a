"""Synthetic visible watermarks: semi-transparent text (single or tiled, rotated) and simple logos.

``add_watermark`` returns the marked image and the watermark's alpha mask, so baselines that need a mask
(OpenCV inpainting) can be given the true one. ``add_watermark_in_view`` marks a crop as a window of a larger
marked image (training data).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .fonts import FontFamily
from .pages import _font
from .words import random_words

# A pixel counts as marked where a mark's opacity exceeds this (the eval's true masks; the training windows).
MARKED_OPACITY = 0.02

WATERMARK_WORDS = ["SAMPLE", "DRAFT", "CONFIDENTIAL", "COPY", "PREVIEW", "PROOF", "Stock", "Photo", "(c) 2024",
                   "DO NOT COPY", "watermark", "Studio", "Images", "ARCHIVE", "licensed"]


def _text(rng: np.random.Generator) -> str:
    if rng.random() < 0.5:
        return str(rng.choice(WATERMARK_WORDS))
    words = random_words(rng, int(rng.integers(1, 4)))
    text = " ".join(w.strip(",.;:?!") for w in words)
    return text.upper() if rng.random() < 0.4 else text


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    r = rng.random()
    if r < 0.4:
        v = int(rng.integers(215, 256))
        return (v, v, v)
    if r < 0.65:
        v = int(rng.integers(0, 60))
        return (v, v, v)
    return tuple(int(c) for c in rng.integers(0, 256, 3))  # type: ignore[return-value]


def _text_layer(rng: np.random.Generator, size: tuple[int, int], fonts: list[FontFamily]) -> Image.Image:
    w, h = size
    family = fonts[int(rng.integers(len(fonts)))]
    path = family.bold if rng.random() < 0.6 else (family.regular if rng.random() < 0.7 else family.italic)
    # Sizes in absolute pixels (not relative to the image), so training crops see eval-sized strokes.
    font = _font(path, int(rng.integers(14, max(16, min(97, min(w, h))))))
    text = _text(rng)
    angle = float(rng.uniform(-45, 45)) if rng.random() < 0.7 else 0.0
    # Draw on a canvas larger than the image so rotation never cuts tiled text at the borders.
    big = int(np.hypot(w, h)) + 8
    layer = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(layer)
    tw = max(1, int(font.getlength(text)))
    th = font.size
    if rng.random() < 0.4:  # tiled
        step_x = tw + int(rng.integers(th, 4 * th + 1))
        step_y = th + int(rng.integers(th, 5 * th + 1))
        for row, y in enumerate(range(-th, big, step_y)):
            shift = (row % 2) * step_x // 2
            for x in range(-tw + shift, big, step_x):
                draw.text((x, y), text, font=font, fill=255)
    else:
        cx = big // 2 + int(rng.uniform(-0.3, 0.3) * w)
        cy = big // 2 + int(rng.uniform(-0.3, 0.3) * h)
        draw.text((cx - tw // 2, cy - th // 2), text, font=font, fill=255)
    layer = layer.rotate(angle, resample=Image.Resampling.BILINEAR)
    left, top = (big - w) // 2, (big - h) // 2
    return layer.crop((left, top, left + w, top + h))


def _logo_layer(rng: np.random.Generator, size: tuple[int, int], fonts: list[FontFamily]) -> Image.Image:
    w, h = size
    layer = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(layer)
    r = int(rng.integers(12, max(14, min(100, min(w, h) // 2))))
    cx, cy = int(rng.integers(r, max(r + 1, w - r))), int(rng.integers(r, max(r + 1, h - r)))
    kind = rng.integers(4)
    stroke = max(2, r // int(rng.integers(4, 9)))
    if kind == 0:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=255, width=stroke)
    elif kind == 1:
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], outline=255, width=stroke)
    elif kind == 2:
        pts = [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in np.linspace(-np.pi / 2, 1.5 * np.pi, 11)[:-1]]
        star = [pts[i] if i % 2 == 0 else (cx + (p[0] - cx) * 0.45, cy + (p[1] - cy) * 0.45) for i, p in enumerate(pts)]
        draw.polygon(star, fill=255)
    else:
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], outline=255, width=stroke)
    if rng.random() < 0.7:  # initials inside / beside the shape
        family = fonts[int(rng.integers(len(fonts)))]
        font = _font(family.bold, max(8, r))
        letters = "".join(rng.choice(list("ABCDEFGHKLMNPRSTWXZ"), int(rng.integers(1, 4))))
        draw.text((cx - font.getlength(letters) / 2, cy - font.size * 0.6), letters, font=font, fill=255)
    return layer


MarkLayer = tuple[np.ndarray, float, np.ndarray]  # (shape in [0, 1], opacity, RGB colour in [0, 1])


def _mark_layers(rng: np.random.Generator, size: tuple[int, int], fonts: list[FontFamily]) -> list[MarkLayer]:
    """One or two marks (text or logo) drawn on a canvas of ``size`` = (width, height)."""
    layers = []
    for _ in range(1 if rng.random() < 0.75 else 2):
        make = _text_layer if rng.random() < 0.75 else _logo_layer
        shape = np.asarray(make(rng, size, fonts), dtype=np.float32) / 255.0
        opacity = float(rng.uniform(0.2, 0.7))
        colour = np.asarray(_colour(rng), np.float32) / 255.0
        layers.append((shape, opacity, colour))
    return layers


def _blend(img: np.ndarray, layers: list[MarkLayer]) -> tuple[np.ndarray, np.ndarray]:
    alpha = np.zeros(img.shape[:2], np.float32)
    out = img.copy()
    for shape, opacity, colour in layers:
        a = (shape * opacity)[..., None]
        out = out * (1 - a) + colour * a
        alpha = np.maximum(alpha, a[..., 0])
    return np.clip(out, 0, 1).astype(np.float32), alpha


def add_watermark(rng: np.random.Generator, img: np.ndarray, fonts: list[FontFamily]) -> tuple[np.ndarray, np.ndarray]:
    """``img`` float32 (H, W, 3) in [0, 1] -> (marked image, alpha mask (H, W) in [0, 1])."""
    h, w = img.shape[:2]
    return _blend(img, _mark_layers(rng, (w, h), fonts))


def add_watermark_in_view(rng: np.random.Generator, img: np.ndarray, fonts: list[FontFamily],
                          canvas: int) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`add_watermark`, but ``img`` is a window of a whole image up to ``canvas`` px a side.

    The marks are laid out on that whole image, so a training crop sees what a tile of a real marked image
    sees: part of a logo up to 100 px in radius, its outline as long straight strokes, text cut at the crop's
    edge. Drawn inside the crop itself, a logo never exceeds half the crop. The window is placed around a
    marked pixel drawn at random, so it always shows some of the marks (a random window would often miss them).
    """
    h, w = img.shape[:2]
    width, height = int(rng.integers(w, max(w, canvas) + 1)), int(rng.integers(h, max(h, canvas) + 1))
    layers = _mark_layers(rng, (width, height), fonts)
    ys, xs = np.nonzero(np.maximum.reduce([shape * opacity for shape, opacity, _ in layers]) > MARKED_OPACITY)
    y = x = 0  # no mark on the whole image (it never happens with these layouts): any window
    if len(ys):
        i = int(rng.integers(len(ys)))
        y, x = int(ys[i]), int(xs[i])
    top = int(np.clip(y - rng.integers(0, h), 0, height - h))
    left = int(np.clip(x - rng.integers(0, w), 0, width - w))
    return _blend(img, [(shape[top:top + h, left:left + w], opacity, colour) for shape, opacity, colour in layers])
