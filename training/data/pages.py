"""Clean synthetic document pages: text blocks rendered from TrueType fonts with varied layouts.

A page is a float32 gray image in [0, 1] (1 = white paper, 0 = black ink). Layouts mix headings, justified or
ragged paragraphs in one or two columns, bullet lists, rules and simple ruled tables, at font sizes of
13–30 px (roughly 10–22 pt at 100 dpi), regular/bold/italic weights. :func:`render_scan_page` adds what real
scans also hold: heavy (bold, ink-bled) and typed pages, large headings, the luma of colour pages; and
:func:`binarize` makes any of them an already-binary scan.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
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


# --- Pages like real scans (doc-denoise-v3): heavy and typed strokes, large headings, colour, already binary. ---
# render_page above is left exactly as it was: the older configs and the dirty evaluation pages keep their pixels.

SCAN_KINDS = ("plain", "heavy", "typewriter", "headings", "colour")


def ink_bleed(page: np.ndarray, radius: int) -> np.ndarray:
    """Ink spread into the paper (heavy type, a wet ribbon, photocopies): grey-level erosion of the paper by a disc."""
    if radius <= 0:
        return page
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.erode(page, disc, borderType=cv2.BORDER_REPLICATE)


def binarize(page: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """An already-binary scan: pure black and white, as bilevel TIFF/fax/thresholded scans arrive."""
    return (page > threshold).astype(np.float32)


def _bold_families(fonts: list[FontFamily]) -> list[FontFamily]:
    # Heavy pages set the body in the bold cut: render_page then draws bold everywhere without any change of its own.
    return [FontFamily(f.name + " (bold body)", f.bold, f.bold, f.italic) for f in fonts]


def render_heavy_page(rng: np.random.Generator, fonts: list[FontFamily], width: int = 800, height: int = 1000,
                      text: list[str] | None = None, bleed: int | None = None) -> np.ndarray:
    """A page set in bold with ink bleed of ``bleed`` px (random 0–1; 2 px on 13–26 px bold fills the counters):
    strokes 3–7 px wide with solid centres."""
    page = render_page(rng, _bold_families(fonts), width, height, text)
    return ink_bleed(page, int(rng.choice([0, 1, 1])) if bleed is None else bleed)


def render_typewriter_page(rng: np.random.Generator, fonts: list[FontFamily], width: int = 800, height: int = 1000,
                           text: list[str] | None = None, bleed: int | None = None, bold: bool | None = None,
                           size: int | None = None) -> np.ndarray:
    """A typed page: a monospaced family of ``fonts`` (any "Mono" one, else any), fixed pitch, ragged right,
    single or double spacing, per-character jitter and ribbon darkness, a capitalised underlined heading,
    then ink bleed (random 0–2 px unless given; 2 px only from 22 px type, where the letters survive it)."""
    mono = [f for f in fonts if "Mono" in f.name] or fonts
    family = mono[int(rng.integers(len(mono)))]
    bold = bool(rng.random() < 0.5) if bold is None else bold
    size = int(rng.integers(15, 31)) if size is None else size
    font = _font(family.bold if bold else family.regular, size)
    pitch = font.getlength("M")
    img = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(img)
    margin_x = int(rng.integers(40, 110))
    y = int(rng.integers(40, 100))
    y_max = height - int(rng.integers(40, 90))
    line_h = int(size * rng.uniform(1.2, 2.1))
    ink_base, ribbon = int(rng.integers(0, 40)), float(rng.uniform(0, 70))
    cols = max(10, int((width - 2 * margin_x) // pitch))

    def type_line(line: str, x0: float, y0: int) -> None:
        for k, ch in enumerate(line):
            if ch != " ":  # struck one key at a time: each character lands a little off and with its own ink
                fill = int(min(140, ink_base + rng.uniform(0, ribbon)))
                draw.text((x0 + k * pitch + rng.normal(0, 0.4), y0 + rng.normal(0, 0.6)), ch, font=font, fill=fill)
        if text is not None:
            text.append(line)

    if rng.random() < 0.8:
        title = random_title(rng).upper()[:cols]
        x0 = margin_x + (int((cols - len(title)) // 2) * pitch if rng.random() < 0.5 else 0)
        type_line(title, x0, y)
        if rng.random() < 0.6:  # underlined with the underscore key
            draw.line([(x0, y + size + 2), (x0 + len(title) * pitch, y + size + 2)], fill=ink_base, width=max(1, size // 12))
        y += 2 * line_h
    while y + line_h <= y_max:
        words = random_words(rng, int(rng.integers(15, 80)))
        line = " " * 5 if rng.random() < 0.5 else ""
        for w in words:
            if line.strip() and len(line) + 1 + len(w) > cols:
                if y + line_h > y_max:
                    break
                type_line(line, margin_x, y)
                y += line_h
                line = ""
            line = f"{line} {w}" if line.strip() else line + w
        if line.strip() and y + line_h <= y_max:
            type_line(line, margin_x, y)
            y += line_h
        y += line_h // 2 if rng.random() < 0.5 else line_h
    page = np.asarray(img, dtype=np.float32) / 255.0
    return ink_bleed(page, int(rng.integers(0, 3 if size >= 22 else 2)) if bleed is None else bleed)


def render_heading_page(rng: np.random.Generator, fonts: list[FontFamily], width: int = 800, height: int = 1000,
                        text: list[str] | None = None) -> np.ndarray:
    """Large headings (40–110 px, bold, sometimes capitals, sometimes white on a dark band) above body text:
    solid strokes far wider than any body text, which the network must keep black."""
    family = fonts[int(rng.integers(len(fonts)))]
    img = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(img)
    y = int(rng.integers(20, 70))
    for _ in range(int(rng.integers(1, 3))):
        size = int(rng.integers(40, 111))
        font = _font(family.bold if rng.random() < 0.85 else family.regular, size)
        title = random_title(rng)
        title = title.upper() if rng.random() < 0.4 else title
        while title and font.getlength(title) > width - 60:
            title = title.rsplit(" ", 1)[0] if " " in title else title[:-1]
        x = int(rng.integers(20, 60)) if rng.random() < 0.6 else (width - int(font.getlength(title))) // 2
        band_h = int(size * 1.5)
        if y + band_h > height // 2:
            break
        if rng.random() < 0.25:  # inverse: white type on a dark band
            draw.rectangle([0, y, width, y + band_h], fill=int(rng.integers(0, 90)))
            draw.text((x, y + size // 5), title, font=font, fill=255)
        else:
            draw.text((x, y + size // 5), title, font=font, fill=int(rng.integers(0, 40)))
        if text is not None:
            text.append(title)
        y += band_h + int(rng.integers(5, 30))
    page = np.asarray(img, dtype=np.float32) / 255.0
    page[y:] = render_page(rng, fonts, width, height - y, text)
    return page


def render_colour_page(rng: np.random.Generator, fonts: list[FontFamily], width: int = 800, height: int = 1000,
                       text: list[str] | None = None) -> np.ndarray:
    """The BT.601 luma of a page with colour, which is what the service feeds the gray model for a colour scan
    (services/inference/runner.py): bands of text in a colour ink (luma 0.08–0.6), tinted boxes behind text (the
    paper darkens, the ink stays ink) and sometimes a coloured banner heading. Luma is linear in RGB, so
    drawing in gray at the colours' luma gives the same pixels as drawing in colour and converting."""
    page = render_heading_page(rng, fonts, width, height, text) if rng.random() < 0.4 else \
        render_page(rng, fonts, width, height, text)
    for _ in range(int(rng.integers(1, 4))):  # a paragraph, caption or heading in colour
        y0 = int(rng.integers(0, height - 40))
        y1 = min(height, y0 + int(rng.integers(30, 250)))
        ink = float(rng.uniform(0.08, 0.6))
        page[y0:y1] = 1.0 - (1.0 - page[y0:y1]) * (1.0 - ink)
    for _ in range(int(rng.integers(0, 3))):  # a highlighted box, a shaded table or sidebar
        y0, x0 = int(rng.integers(0, height - 60)), int(rng.integers(0, width - 100))
        y1, x1 = min(height, y0 + int(rng.integers(40, 400))), min(width, x0 + int(rng.integers(100, width)))
        page[y0:y1, x0:x1] *= float(rng.uniform(0.72, 0.97))
    return page


def render_scan_page(rng: np.random.Generator, fonts: list[FontFamily], kind: str, width: int = 800,
                     height: int = 1000, text: list[str] | None = None) -> np.ndarray:
    """One clean page of ``kind`` (:data:`SCAN_KINDS`), float32 (height, width) in [0, 1]."""
    if kind == "plain":
        return render_page(rng, fonts, width, height, text)
    if kind == "heavy":
        return render_heavy_page(rng, fonts, width, height, text)
    if kind == "typewriter":
        return render_typewriter_page(rng, fonts, width, height, text)
    if kind == "headings":
        return render_heading_page(rng, fonts, width, height, text)
    if kind == "colour":
        return render_colour_page(rng, fonts, width, height, text)
    raise ValueError(f"unknown page kind {kind!r}; one of {SCAN_KINDS}")
