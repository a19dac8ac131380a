"""Colour pages through a gray document model: stamps, coloured signatures and highlighter survive (issue 13, item 6).

doc-denoise restores luma only. For a colour scan the model cleans the page's luma (Y, BT.601), and the chroma
(Cb, Cr) is carried over from the input, less the paper's tint. Chroma below a threshold is dropped, so the paper's
residual tint, chroma noise and faint stains do not survive; the threshold is higher where the model made the
page paper white (a stain erased to paper is not brought back by its tint) than on ink. Strongly coloured marks
(a red stamp, blue ink, highlighter) also keep their own lightness (white-balanced to the paper): the model, trained on
gray pages, takes a red stamp for ink and would make it nearly black.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .content import LUMA

# Chroma magnitude (√(Cb² + Cr²) on the 0–255 scale, relative to the paper's tint) at which a pixel's colour starts to
# count and fully counts. Scanner chroma noise is a few levels; stains on aged paper ~15–30; red stamps, blue or
# green ink and highlighter 50–90 (measured on tests/unit/test_page_colour.py's synthetic page and the figures of
# common inks).
INK_CHROMA = (12.0, 24.0)  # where the restored page is dark (ink)
PAPER_CHROMA = (32.0, 48.0)  # where the restored page is paper white: only marks stronger than stains
OWN_LIGHTNESS_CHROMA = (32.0, 48.0)  # marks this colourful keep their own (white-balanced) lightness
# auto: a page has meaningful colour when at least this share of its pixels (and this many) is this colourful.
MEANINGFUL_CHROMA = 24.0
MEANINGFUL_SHARE = 0.0005  # 1 pixel in 2000: a signature or a stamp on an A4 page at 200 dpi is several times that
MEANINGFUL_MIN_PIXELS = 64
PAPER_LUMA = 240.0  # restored luma at or above which the model made a pixel paper
_BAND_ROWS = 256  # pages are recombined a band of rows at a time: memory stays a few bands, whatever the page


@dataclass(frozen=True)
class PaperTint:
    """The paper's chroma (what "no colour" is on this page) and its input luma (what becomes white)."""

    cb: float
    cr: float
    luma: float

    @classmethod
    def of(cls, source: np.ndarray, restored_luma: np.ndarray) -> PaperTint:
        """Medians over the pixels the model made paper, on a subsample of at most ~512 px on the long side."""
        step = max(1, max(source.shape[:2]) // 512)
        y, cb, cr = _ycbcr(_unit8(source[::step, ::step]))
        paper = _unit8(restored_luma[::step, ::step])[..., 0] >= PAPER_LUMA
        if not paper.any():
            return cls(0.0, 0.0, 255.0)
        return cls(float(np.median(cb[paper])), float(np.median(cr[paper])), max(float(np.median(y[paper])), 1.0))


def has_meaningful_colour(source: np.ndarray, restored_luma: np.ndarray, tint: PaperTint | None = None) -> bool:
    """Whether enough of the page is clearly coloured relative to its paper (a stamp, coloured ink, highlighter), not
    just tinted paper, chroma noise or colour fringes at the edges of black text."""
    tint = tint or PaperTint.of(source, restored_luma)
    colourful = 0
    for rows in _bands(source.shape[0]):
        _, cb, cr = _ycbcr(_unit8(source[rows]))
        colourful += int(np.count_nonzero(np.hypot(cb - tint.cb, cr - tint.cr) >= MEANINGFUL_CHROMA))
    pixels = source.shape[0] * source.shape[1]
    return colourful >= max(MEANINGFUL_MIN_PIXELS, MEANINGFUL_SHARE * pixels)


def recolour(source: np.ndarray, restored_luma: np.ndarray, tint: PaperTint | None = None) -> np.ndarray:
    """An 8-bit RGB page: ``restored_luma`` (H, W, 1) with ``source``'s (H, W, 3) chroma, less the paper's tint."""
    tint = tint or PaperTint.of(source, restored_luma)
    out = np.empty((*source.shape[:2], 3), dtype=np.uint8)
    for rows in _bands(source.shape[0]):
        y_in, cb, cr = _ycbcr(_unit8(source[rows]))
        y_out = _unit8(restored_luma[rows])[..., 0]
        cb -= tint.cb
        cr -= tint.cr
        chroma = np.hypot(cb, cr)
        paperness = np.clip((y_out - 128.0) / (PAPER_LUMA - 128.0), 0.0, 1.0)
        lo = INK_CHROMA[0] + (PAPER_CHROMA[0] - INK_CHROMA[0]) * paperness
        hi = INK_CHROMA[1] + (PAPER_CHROMA[1] - INK_CHROMA[1]) * paperness
        keep = np.clip((chroma - lo) / (hi - lo), 0.0, 1.0)
        own = np.clip((chroma - OWN_LIGHTNESS_CHROMA[0]) / (OWN_LIGHTNESS_CHROMA[1] - OWN_LIGHTNESS_CHROMA[0]), 0, 1)
        y = y_out + own * (np.minimum(y_in * (255.0 / tint.luma), 255.0) - y_out)
        cb *= keep
        cr *= keep
        rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=-1)
        out[rows] = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    return out


def _unit8(pixels: np.ndarray) -> np.ndarray:
    """Float32 on the 0–255 scale, whatever the bit depth."""
    values = pixels.astype(np.float32)
    return values / 257.0 if pixels.dtype == np.uint16 else values


def _ycbcr(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = rgb @ LUMA
    return y, 0.564 * (rgb[..., 2] - y), 0.713 * (rgb[..., 0] - y)


def _bands(height: int):
    for top in range(0, height, _BAND_ROWS):
        yield slice(top, min(top + _BAND_ROWS, height))
