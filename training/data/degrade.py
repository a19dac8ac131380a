"""Dirty-document corruptions, layered at random on a clean page (float32 gray, 1 = paper, 0 = ink).

Every effect is defined in absolute pixels, so the same function corrupts a 160-px training crop and a full
800×1000 evaluation page with the same local statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std low-frequency noise with correlation length ~sigma px."""
    n = rng.standard_normal(shape).astype(np.float32)
    n = cv2.GaussianBlur(n, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return (n - n.mean()) / (n.std() + 1e-6)


def paper_texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Paper brightness: a base tone, fibre-like mid-frequency texture and fine grain."""
    base = rng.uniform(0.72, 1.0)
    tex = rng.uniform(0.003, 0.03) * _smooth_noise(rng, shape, rng.uniform(1.5, 6.0))
    grain = rng.uniform(0.0, 0.03) * rng.standard_normal(shape).astype(np.float32)
    return np.clip(base + tex + grain, 0.3, 1.0)


def _ellipse_field(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Normalised elliptical distance (1 on the rim) around a random centre, and the rim radius in px."""
    h, w = shape
    cy, cx = rng.uniform(-0.2, 1.2) * h, rng.uniform(-0.2, 1.2) * w
    r = rng.uniform(20, 160)
    ax, ay = r * rng.uniform(0.8, 1.25), r * rng.uniform(0.8, 1.25)
    theta = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    u = (dx * np.cos(theta) + dy * np.sin(theta)) / ax
    v = (-dx * np.sin(theta) + dy * np.cos(theta)) / ay
    return np.sqrt(u * u + v * v), r


def coffee_stain(rng: np.random.Generator, shape: tuple[int, int],
                 strength_range: tuple[float, float] = (0.1, 0.45)) -> np.ndarray:
    """Multiplicative darkening of a coffee ring: faint fill, darker irregular rim (``strength_range``: its depth)."""
    d, r = _ellipse_field(rng, shape)
    wobble = 0.06 * _smooth_noise(rng, shape, max(2.0, r / 6))
    d = d + wobble
    width = rng.uniform(0.02, 0.08)
    rim = np.exp(-((d - 1.0) ** 2) / (2 * width**2))
    fill = (d < 1.0).astype(np.float32) * rng.uniform(0.0, 0.5)
    fill = cv2.GaussianBlur(fill, (0, 0), max(1.0, r * 0.05))
    strength = rng.uniform(*strength_range)
    return 1.0 - strength * np.clip(rim + fill, 0, 1)


def smudge(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A soft dark blob (finger smear, dirt)."""
    d, r = _ellipse_field(rng, shape)
    blob = np.exp(-(d**2) * rng.uniform(1.0, 4.0)) * np.clip(1 + 0.5 * _smooth_noise(rng, shape, max(2.0, r / 4)), 0, 2)
    return 1.0 - rng.uniform(0.08, 0.35) * np.clip(blob, 0, 1)


def fold(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A crease: a thin dark line with a shaded ramp on one side, at a random angle and offset."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    off = rng.uniform(0, 1) * (abs(h * np.sin(theta)) + abs(w * np.cos(theta))) - (h * np.sin(theta) if np.sin(theta) < 0 else 0)
    dist = xx * np.cos(theta) + yy * np.sin(theta) - off
    line = np.exp(-(dist**2) / (2 * rng.uniform(0.6, 2.5) ** 2)) * rng.uniform(0.1, 0.4)
    ramp_w = rng.uniform(5, 40)
    ramp = np.exp(-np.maximum(dist, 0) / ramp_w) * (dist > 0) * rng.uniform(-0.12, 0.15)
    return np.clip(1.0 - line - ramp, 0.3, 1.2)


def illumination(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Uneven lighting: a linear gradient times a vignette, multiplicative, 0.55–1.0."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    scale = rng.uniform(300, 1500)  # absolute px, so crops see a gentle slope, pages a strong one
    gx, gy = rng.normal(0, 1, 2)
    grad = (gx * (xx - rng.uniform(0, w)) + gy * (yy - rng.uniform(0, h))) / scale
    field = 1.0 - rng.uniform(0.05, 0.3) * np.abs(np.tanh(grad))
    if rng.random() < 0.5:
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        rr = ((yy - cy) ** 2 + (xx - cx) ** 2) / rng.uniform(300, 1200) ** 2
        field *= 1.0 - rng.uniform(0.05, 0.3) * np.clip(rr, 0, 1)
    return field.astype(np.float32)


def bleed_through(rng: np.random.Generator, other_page: np.ndarray) -> np.ndarray:
    """Faint mirrored text of the reverse side: multiplicative, blurred."""
    mirrored = other_page[:, ::-1]
    blurred = cv2.GaussianBlur(np.ascontiguousarray(mirrored), (0, 0), rng.uniform(0.8, 2.5))
    return 1.0 - rng.uniform(0.08, 0.35) * (1.0 - blurred)


def jpeg(rng: np.random.Generator, img: np.ndarray, quality: int | None = None) -> np.ndarray:
    q = int(rng.integers(15, 80)) if quality is None else quality
    ok, buf = cv2.imencode(".jpg", np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, q])
    assert ok
    out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0
    return out.reshape(img.shape)


@dataclass(frozen=True)
class DirtOptions:
    """Extra dirt of real scans (doc-denoise-v3), on top of :func:`corrupt_page`'s; None there = the original mix.

    ``specks``: probability of a dust layer (:func:`specks`); ``faint_rings``: probability of a faint coffee-ring
    trace (depth 0.03–0.12: rings the original mix, 0.1–0.45, never showed, and which stayed in the output).
    """

    specks: float = 0.5
    faint_rings: float = 0.3


def specks(rng: np.random.Generator, img: np.ndarray, density: float | None = None) -> np.ndarray:
    """Dust and toner specks: 1–5 px dots, faint (10 % darker) to solid, and a few white pin-holes in the ink.

    Unlike the single-pixel 0/1 salt and pepper of :func:`corrupt_page`, these have size and any contrast,
    as scanner dust and photocopy specks do. ``density``: dots per 10 000 px (random 0.5–8 if None).
    """
    h, w = img.shape
    density = float(rng.uniform(0.5, 8.0)) if density is None else density
    out = img
    for sign in (1.0, -1.0):  # dark dots on the paper, then light holes
        n = int(rng.poisson(density * h * w / 1e4 * (1.0 if sign > 0 else 0.15)))
        if n == 0:
            continue
        dots = np.zeros((h, w), np.float32)
        ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
        dots[ys, xs] = rng.uniform(0.1, 1.0, n).astype(np.float32) ** 0.7
        radius = int(rng.integers(0, 3))
        if radius:
            dots = cv2.dilate(dots, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)))
        dots = np.clip(cv2.GaussianBlur(dots, (0, 0), float(rng.uniform(0.3, 0.8))) * 1.3, 0, 1)
        out = out * (1.0 - dots) if sign > 0 else out + (1.0 - out) * dots
    return out.astype(np.float32)


def light_dirt(rng: np.random.Generator, clean: np.ndarray) -> np.ndarray:
    """A nearly clean scan: only faint dirt — specks, a faint coffee-ring trace, light grain, mild JPEG.

    An already-binary page stays binary (dust on a bilevel scan is black or white, nothing in between); such a
    crop can rarely come out unchanged (only faint dots, thresholded away), a gray one never does.
    """
    shape = clean.shape
    if np.isin(clean, (0.0, 1.0)).all() and rng.random() < 0.7:
        dirty = specks(rng, clean)
        return (dirty > float(rng.uniform(0.35, 0.65))).astype(np.float32)
    img = clean
    if rng.random() < 0.7:
        img = specks(rng, img)
    if rng.random() < 0.5:
        img = img * coffee_stain(rng, shape, (0.03, 0.12))
    if rng.random() < 0.5:
        img = img + rng.uniform(0.005, 0.03) * rng.standard_normal(shape).astype(np.float32)
    if rng.random() < 0.3:
        p = rng.uniform(0.0005, 0.005)
        u = rng.random(shape)
        img = np.where(u < p, img * rng.uniform(0.4, 0.9), img)  # faint single-pixel pepper
    img = np.clip(img, 0.0, 1.0).astype(np.float32)
    if rng.random() < 0.3:
        img = jpeg(rng, img, int(rng.integers(50, 95)))
    if np.array_equal(img, clean):  # nothing drawn: clean pairs are the task's clean_fraction, not this
        img = specks(rng, img, density=4.0)
    return img


def corrupt_page(rng: np.random.Generator, clean: np.ndarray, other_page: np.ndarray | None = None,
                 options: DirtOptions | None = None) -> np.ndarray:
    """A dirty version of ``clean`` (same shape); ``other_page`` (same shape) provides bleed-through.

    ``options`` adds the real-scan dirt of :class:`DirtOptions`; without it the random draws, and so the
    pages of every older config and of the evaluation set, are exactly the original ones.
    """
    shape = clean.shape
    paper = paper_texture(rng, shape)
    if other_page is not None and rng.random() < 0.4:
        paper = paper * bleed_through(rng, other_page)
    for _ in range(int(rng.poisson(0.9))):
        paper = paper * coffee_stain(rng, shape)
    if options is not None and rng.random() < options.faint_rings:
        paper = paper * coffee_stain(rng, shape, (0.03, 0.12))
    # Faded or heavy ink: text keeps its shape but not its contrast.
    ink = 1.0 - rng.uniform(0.55, 1.0) * (1.0 - clean)
    if rng.random() < 0.3:  # slightly thickened / smeared strokes
        ink = cv2.GaussianBlur(ink, (0, 0), rng.uniform(0.4, 0.9))
    img = paper * ink
    for _ in range(int(rng.poisson(0.5))):
        img = img * smudge(rng, shape)
    if rng.random() < 0.35:
        img = img * fold(rng, shape)
    if rng.random() < 0.7:
        img = img * illumination(rng, shape)
    if rng.random() < 0.35:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.2))
    if rng.random() < 0.75:
        img = img + rng.uniform(0.01, 0.08) * rng.standard_normal(shape).astype(np.float32)
    if rng.random() < 0.3:
        p = rng.uniform(0.001, 0.02)
        u = rng.random(shape)
        img = np.where(u < p / 2, 0.0, np.where(u > 1 - p / 2, 1.0, img))
    if options is not None and rng.random() < options.specks:
        img = specks(rng, img)
    img = np.clip(img, 0.0, 1.0).astype(np.float32)
    if rng.random() < 0.5:
        img = jpeg(rng, img)
    return img
