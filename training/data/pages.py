"""Clean synthetic document pages: text blocks rendered from TrueType fonts with varied layouts.

A page is a float32 gray image in [0, 1] (1 = white paper, 0 = black ink). Layouts mix headings, justified or
ragged paragraphs in one or two columns, bullet lists, rules and simple ruled tables, at font sizes of
13–30 px (roughly 10–22 pt at 100 dpi), regular/bold/italic weights.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .fonts import FontFamily
from .words import random_title, random_words


@lru_cache(maxsize=512)
def _font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size)


def _paragraph(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, font: ImageFont.FreeTypeFont, x0: int, x1: int, y: int,
    y_max: int, ink: int, justify: bool, line_gap: float, indent: int = 0, text: list[str] | None = None,
) -> int:
    """Wraps random words into [x0, x1] from y down; returns the y after the paragraph."""
    size = font.size
    words = random_words(rng, int(rng.integers(15, 90)))
    space = font.getlength(" ")
    line_h = int(size * line_gap)
    line: list[str] = []
    width = indent
    lines: list[tuple[list[str], bool]] = []
    for w in words:
        wl = font.getlength(w)
        if line and width + space + wl > x1 - x0:
            lines.append((line, False))
            line, width = [], 0
        width += (space if line else 0) + wl
        line.append(w)
    if line:
        lines.append((line, True))
    for i, (ln, last) in enumerate(lines):
        if y + line_h > y_max:
            break
        start = x0 + (indent if i == 0 else 0)
        if text is not None:
            text.append(" ".join(ln))
        if justify and not last and len(ln) > 1:
            total = sum(font.getlength(w) for w in ln)
            gap = (x1 - start - total) / (len(ln) - 1)
            x = float(start)
            for w in ln:
                draw.text((x, y), w, font=font, fill=ink)
                x += font.getlength(w) + gap
        else:
            draw.text((start, y), " ".join(ln), font=font, fill=ink)
        y += line_h
    return y


def _table(draw: ImageDraw.ImageDraw, rng: np.random.Generator, font: ImageFont.FreeTypeFont, x0: int, x1: int,
           y: int, y_max: int, ink: int, text_out: list[str] | None = None) -> int:
    cols = int(rng.integers(2, 6))
    rows = int(rng.integers(2, 8))
    row_h = int(font.size * 1.8)
    col_w = (x1 - x0) // cols
    rows = max(0, min(rows, (y_max - y) // row_h - 1))
    if rows < 2:
        return y
    line_w = int(rng.integers(1, 3))
    for r in range(rows + 1):
        draw.line([(x0, y + r * row_h), (x0 + cols * col_w, y + r * row_h)], fill=ink, width=line_w)
    for c in range(cols + 1):
        draw.line([(x0 + c * col_w, y), (x0 + c * col_w, y + rows * row_h)], fill=ink, width=line_w)
    for r in range(rows):
        for c in range(cols):
            words = random_words(rng, int(rng.integers(1, 3)))
            text = " ".join(words)
            while text and font.getlength(text) > col_w - 8:
                text = text[:-1]
            draw.text((x0 + c * col_w + 4, y + r * row_h + (row_h - font.size) // 2), text, font=font, fill=ink)
            if text_out is not None:
                text_out.append(text)
    return y + rows * row_h + row_h // 2


def render_page(rng: np.random.Generator, fonts: list[FontFamily], width: int = 800, height: int = 1000,
                text: list[str] | None = None) -> np.ndarray:
    """One clean page, float32 (height, width) in [0, 1]; the drawn strings are appended to ``text`` in
    reading order (column by column) when given, as OCR ground truth."""
    img = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(img)
    family = fonts[int(rng.integers(len(fonts)))]
    body_size = int(rng.integers(13, 27))
    regular = _font(family.regular, body_size)
    bold = _font(family.bold, body_size)
    italic = _font(family.italic, body_size)
    ink = int(rng.integers(0, 50))
    margin_x = int(rng.integers(30, 90))
    y = int(rng.integers(30, 90))
    y_max = height - int(rng.integers(30, 80))
    justify = bool(rng.random() < 0.5)
    line_gap = float(rng.uniform(1.15, 1.6))
    two_col = bool(rng.random() < 0.3)

    # Heading.
    if rng.random() < 0.8:
        hsize = int(body_size * rng.uniform(1.3, 2.0))
        hfont = _font(family.bold, hsize)
        title = random_title(rng)
        while title and hfont.getlength(title) > width - 2 * margin_x:
            title = title.rsplit(" ", 1)[0] if " " in title else title[:-1]
        x = margin_x if rng.random() < 0.6 else (width - int(hfont.getlength(title))) // 2
        draw.text((x, y), title, font=hfont, fill=ink)
        if text is not None:
            text.append(title)
        y += int(hsize * 1.8)

    columns = [(margin_x, width - margin_x)]
    if two_col:
        gutter = int(rng.integers(20, 50))
        mid = width // 2
        columns = [(margin_x, mid - gutter // 2), (mid + gutter // 2, width - margin_x)]
    y_start = y
    for ci, (x0, x1) in enumerate(columns):
        y = y_start
        while y < y_max - body_size * 2:
            r = rng.random()
            if r < 0.62:
                font = italic if rng.random() < 0.1 else (bold if rng.random() < 0.08 else regular)
                indent = int(body_size * 2) if rng.random() < 0.4 else 0
                y = _paragraph(draw, rng, font, x0, x1, y, y_max, ink, justify, line_gap, indent, text)
                y += int(body_size * rng.uniform(0.4, 1.2))
            elif r < 0.74:  # bullet list
                for _ in range(int(rng.integers(2, 5))):
                    if y + body_size * 2 > y_max:
                        break
                    rad = max(2, body_size // 6)
                    cy = y + int(body_size * 0.6)
                    draw.ellipse([x0 + 4, cy - rad, x0 + 4 + 2 * rad, cy + rad], fill=ink)
                    y = _paragraph(draw, rng, regular, x0 + body_size * 2, x1, y, y_max, ink, False, line_gap, text=text)
                y += body_size // 2
            elif r < 0.84 and not two_col:
                y = _table(draw, rng, regular, x0, x1, y, y_max, ink, text)
            elif r < 0.90:
                draw.line([(x0, y + body_size // 2), (x1, y + body_size // 2)], fill=ink, width=int(rng.integers(1, 4)))
                y += body_size
            else:  # subheading
                sub = random_title(rng)
                while sub and bold.getlength(sub) > x1 - x0:
                    sub = sub[:-1]
                draw.text((x0, y), sub, font=bold, fill=ink)
                if text is not None:
                    text.append(sub)
                y += int(body_size * 1.8)
    return np.asarray(img, dtype=np.float32) / 255.0
