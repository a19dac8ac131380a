"""Thumbnails of documents: a multi-page TIFF and a PDF are shown by their first page, within the pixel limit."""

from __future__ import annotations

import io
from dataclasses import dataclass

import img2pdf
import numpy as np
import pytest
from PIL import Image

from services.api.thumbnails import ThumbnailCache, Thumbnailer
from services.errors import ImageTooLargeError
from services.imaging.documents import output_preview_url
from services.jobs import Job, OutputInfo, PageCounts
from tests.support.documents import bilevel, scan, scanned_pdf, tiff_bytes


@dataclass
class _Head:
    size: int
    etag: str


class _Store:
    """The two calls a Thumbnailer makes of the object store, over a dict."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.s3 = self

    def head(self, url: str) -> _Head | None:
        data = self.objects.get(url)
        return None if data is None else _Head(len(data), str(hash(data)))

    def read(self, url: str) -> bytes:
        return self.objects[url]


def thumbnail(data: bytes, size: int = 144, max_pixels: int = 4_000_000) -> Image.Image:
    thumbs = Thumbnailer(_Store({"s3://b/doc": data}), max_pixels=max_pixels, max_bytes=10_000_000,
                         cache=ThumbnailCache())
    jpeg, _ = thumbs.thumbnail("s3://b/doc", size)
    return Image.open(io.BytesIO(jpeg))


def test_a_multipage_tiff_is_shown_by_its_first_page():
    dark = np.full((200, 100), 30, dtype=np.uint8)  # page 1: tall and dark; page 2: wide and light
    data = tiff_bytes([Image.fromarray(dark), Image.fromarray(scan(100, 300, 2))], ["tiff_lzw"] * 2)
    thumb = thumbnail(data)
    assert thumb.size == (72, 144) and np.asarray(thumb.convert("L")).mean() < 60


def test_a_bilevel_group4_page_thumbnail_keeps_its_ink():
    thumb = thumbnail(tiff_bytes([bilevel(400, 300, 3), bilevel(400, 300, 4)], ["group4"] * 2))
    pixels = np.asarray(thumb.convert("L"))
    assert thumb.size == (108, 144) and pixels.mean() > 120 and pixels.min() < 80


def test_a_pdf_is_shown_by_its_first_page_rendered_at_thumbnail_scale():
    thumb = thumbnail(scanned_pdf())  # page 1: 240×300 px at 150 dpi = 115.2×144 pt; page 2 is landscape-ish G4
    assert thumb.size == (115, 144)
    pixels = np.asarray(thumb.convert("L"))
    assert pixels.mean() > 120 and pixels.min() < 80  # paper with the dark bars of the scan


def test_a_pdf_page_image_over_the_pixel_limit_is_refused_before_rendering():
    big = io.BytesIO()
    Image.new("L", (3000, 2000), 255).save(big, format="PNG")
    with pytest.raises(ImageTooLargeError, match="first page's image: 3000×2000.*THUMBNAIL_MAX_PIXELS"):
        thumbnail(img2pdf.convert(big.getvalue()), max_pixels=1_000_000)


def test_page_image_outputs_are_previewed_by_their_first_page_file():
    job = Job(task="denoise", input_url="s3://b/in/ledger.pdf", output_url="s3://b/out/ledger",
              options={"output_format": "png-pages"})
    assert output_preview_url(job) == "s3://b/out/ledger"  # not finished: no page count yet
    job.result = OutputInfo(width=1, height=1, mode="L", format="PNG-PAGES", bytes=1, megapixels=0, model="m",
                            tiles=1, pages=PageCounts(total=3, restored=3))
    assert output_preview_url(job) == "s3://b/out/ledger/page-0001.png"
    job.options.output_format = "PDF"
    assert output_preview_url(job) == "s3://b/out/ledger"
