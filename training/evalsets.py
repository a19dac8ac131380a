"""The held-out evaluation sets, generated deterministically and never used for training.

* documents: pages rendered with the evaluation fonts (FreeFont, Noto; disjoint from training) and seed
  ``DOC_SEED``, corrupted by the same generator as training; and "clean in" pages (:func:`clean_in_pages`)
  that need no cleaning at all;
* photos: scikit-learn's china/flower, scikit-image's astronaut/coffee/chelsea/rocket, cropped to a multiple
  of 16 — noisy versions at fixed σ and in real-noise shapes (:func:`photo_condition`), watermarked versions (evaluation fonts) with their true masks, and
  luma for colorization.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from .data.degrade import corrupt_page
from .data.fonts import eval_fonts
from .data.noise import add_gaussian, add_poisson_gaussian, jpeg_rgb, luma_gray
from .data.pages import render_page
from .data.sources import load_eval_photos
from .data.watermarks import MARKED_OPACITY, add_watermark

DOC_SEED = 20261126
PHOTO_SEED = 4242
WATERMARK_SEED = 777
CROP_MULTIPLE = 16


@dataclass
class EvalPage:
    clean: np.ndarray
    dirty: np.ndarray
    text: str


def eval_pages(n: int = 4, width: int = 800, height: int = 1008) -> list[EvalPage]:
    rng = np.random.default_rng(DOC_SEED)
    fonts = eval_fonts()
    pages = []
    others = []
    for _ in range(n):
        lines: list[str] = []
        clean = render_page(rng, fonts, width, height, text=lines)
        pages.append((clean, "\n".join(lines)))
        others.append(clean)
    out = []
    for i, (clean, text) in enumerate(pages):
        # Guarantee every eval page carries real dirt (the training sampler may draw clean-ish crops).
        dirty = corrupt_page(rng, clean, others[(i + 1) % n])
        out.append(EvalPage(clean, dirty, text))
    return out


CLEAN_IN_SEED = 20261127
# The "clean in" document set (name, page kind, bleed px, binary): pages that need no cleaning, which the model
# must hand back untouched. Typed pages use FreeMono (evaluation only), the others FreeFont/Noto.
CLEAN_IN_SPECS = [
    ("clean page", "plain", 0, False),
    ("clean page, binary", "plain", 0, True),
    ("typewriter, binary", "typewriter", 1, True),
    ("typewriter, heavy, binary", "typewriter", 2, True),
    ("bold, ink bleed, binary", "heavy", 1, True),
    ("large headings", "headings", 0, False),
    ("colour page (luma)", "colour", 0, False),
]
CLEAN_IN_QUICK = ("clean page", "typewriter, heavy, binary", "large headings")


@dataclass
class CleanInPage:
    name: str
    kind: str
    image: np.ndarray  # input and expected output at once
    text: str  # what was drawn: shows tesseract can read the input at all


def clean_in_pages(quick: bool = False, width: int = 800, height: int = 1008) -> list[CleanInPage]:
    """Already-clean pages (clean, already binary, heavy typed strokes, large headings, colour luma), one seed per
    page so adding a page leaves the others as they are."""
    from .data.fonts import eval_typewriter_fonts
    from .data.pages import binarize, render_heavy_page, render_scan_page, render_typewriter_page

    fonts = eval_fonts()
    out = []
    for i, (name, kind, bleed, binary) in enumerate(CLEAN_IN_SPECS):
        if quick and name not in CLEAN_IN_QUICK:
            continue
        rng = np.random.default_rng([CLEAN_IN_SEED, i])
        lines: list[str] = []
        if kind == "typewriter":
            # Pica type scanned at ~150 dpi (22 px) and, bold with 2 px bleed, at ~200 dpi (30 px): heavy strokes
            # with solid centres that tesseract still reads (at 22-26 px that bleed closes the letters).
            heavy = bleed > 1
            page = render_typewriter_page(rng, eval_typewriter_fonts(), width, height, lines, bleed=bleed,
                                          bold=heavy, size=30 if heavy else 22)
        elif kind == "heavy":
            page = render_heavy_page(rng, fonts, width, height, lines, bleed=bleed)
        else:
            page = render_scan_page(rng, fonts, kind, width, height, lines)
        if binary:
            page = binarize(page)
        out.append(CleanInPage(name, kind, np.round(page * 255.0).astype(np.float32) / 255.0,  # 8-bit, as scans
                               "\n".join(lines)))
    return out


def _crop(img: np.ndarray) -> np.ndarray:
    h = img.shape[0] // CROP_MULTIPLE * CROP_MULTIPLE
    w = img.shape[1] // CROP_MULTIPLE * CROP_MULTIPLE
    return img[:h, :w]


def eval_photos() -> dict[str, np.ndarray]:
    """name -> float32 RGB in [0, 1], cropped to a multiple of 16."""
    return {k: _crop(v).astype(np.float32) / 255.0 for k, v in sorted(load_eval_photos().items())}


def noisy_photos(sigma: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (clean, noisy) with Gaussian σ (0–255 scale), clipped, fixed seed per (image, σ)."""
    out = {}
    for i, (name, clean) in enumerate(eval_photos().items()):
        rng = np.random.default_rng([PHOTO_SEED, i, int(sigma)])
        out[name] = (clean, add_gaussian(rng, clean, sigma))
    return out


def condition_sigma(condition: str) -> float:
    """The noise σ (0–255) of a photo-eval condition such as "σ=25" or "gray σ=25"."""
    return float(condition.split("σ=")[1].split()[0])


def photo_condition(condition: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (clean, noisy) for one photo-eval condition, fixed seed per (image, condition).

    "σ=S": Gaussian; "Poisson-Gaussian σ=S": signal-dependent, std S at mid-gray; "gray σ=S": the photo's
    luma in all three channels with one gray noise field; "JPEG σ=S q=Q": Gaussian, then JPEG at quality Q.
    """
    sigma = condition_sigma(condition)
    if condition.startswith("σ="):
        return noisy_photos(sigma)
    out = {}
    for i, (name, clean) in enumerate(eval_photos().items()):
        rng = np.random.default_rng([PHOTO_SEED, i, int(sigma), zlib.crc32(condition.encode())])
        if condition.startswith("Poisson-Gaussian"):
            noisy = add_poisson_gaussian(rng, clean, sigma)
        elif condition.startswith("gray"):
            clean = luma_gray(clean)
            noisy = np.repeat(add_gaussian(rng, clean[..., :1], sigma), 3, axis=2)
        elif condition.startswith("JPEG"):
            noisy = jpeg_rgb(add_gaussian(rng, clean, sigma), int(condition.split("q=")[1]))
        else:
            raise ValueError(f"unknown photo-eval condition {condition!r}")
        out[name] = (clean, noisy)
    return out


def watermarked_photos() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """name -> (clean, marked, true mask as bool) — watermarks drawn with the evaluation fonts."""
    fonts = eval_fonts()
    out = {}
    for i, (name, clean) in enumerate(eval_photos().items()):
        rng = np.random.default_rng([WATERMARK_SEED, i])
        marked, alpha = add_watermark(rng, clean, fonts)
        out[name] = (clean, marked, alpha > MARKED_OPACITY)
    return out


def unmarked_images(n_pages: int = 2) -> dict[str, np.ndarray]:
    """name -> RGB float image without any watermark: the eval photos and clean eval pages (evaluation fonts).

    A watermark remover runs on whole archives, most of whose images carry no mark: these must come back
    untouched.
    """
    out = dict(eval_photos())
    for i, page in enumerate(eval_pages(n_pages)):
        out[f"page {i + 1}"] = np.repeat(_crop(page.clean)[..., None], 3, axis=2).astype(np.float32)
    return out


def luma601(rgb: np.ndarray) -> np.ndarray:
    return (rgb @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.float32)
