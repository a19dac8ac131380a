"""Documents made in the tests: scanned-looking pages, multi-page TIFFs, scanner-style PDFs (img2pdf)."""

from __future__ import annotations

import io

import img2pdf
import numpy as np
import pikepdf
from PIL import Image, TiffImagePlugin


def scan(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A gray 'scanned page': noisy paper with dark text-like bars."""
    rng = np.random.default_rng(seed)
    page = (rng.normal(225, 12, (height, width))).clip(0, 255).astype(np.uint8)
    for row in range(height // 8, height - height // 8, max(height // 8, 4)):
        page[row:row + max(height // 24, 2), width // 8:width - width // 8] = 25
    return page


def bilevel(height: int, width: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(scan(height, width, seed) > 128)


def tiff_bytes(pages: list[Image.Image], compressions: list[str], dpi=(300, 300), photometric=None) -> bytes:
    out = io.BytesIO()
    with TiffImagePlugin.AppendingTiffWriter(out, new=True) as writer:
        for page, compression in zip(pages, compressions):
            extra = {"tiffinfo": {262: photometric}} if photometric is not None and page.mode == "1" else {}
            page.save(writer, format="TIFF", compression=compression, dpi=dpi, **extra)
            writer.newFrame()
    return out.getvalue()


def scanned_pdf(with_outline: bool = True) -> bytes:
    """img2pdf: a JPEG gray page and a Group 4 page, the way scanners export; then a bookmark and metadata."""
    gray = io.BytesIO()
    Image.fromarray(scan(300, 240, 11)).save(gray, format="JPEG", quality=75, dpi=(150, 150))
    g4 = tiff_bytes([bilevel(330, 250, 12)], ["group4"], dpi=(200, 200), photometric=0)
    data = img2pdf.convert([gray.getvalue(), g4])
    pdf = pikepdf.open(io.BytesIO(data))
    with pdf.open_metadata() as meta:
        meta["dc:title"] = "Ledger 1931"
    pdf.docinfo["/Title"] = "Ledger 1931"
    if with_outline:
        with pdf.open_outline() as outline:
            outline.root.append(pikepdf.OutlineItem("Second page", 1))
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()
