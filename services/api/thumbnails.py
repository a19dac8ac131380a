"""Small JPEG previews of a job's input and output for the status page: the only place the API touches pixels.

Images are read through ``StorageRouter`` (s3:// only), refused above ``IMGRESTORE_API_THUMBNAIL_MAX_BYTES`` before
they are downloaded, and above ``IMGRESTORE_API_THUMBNAIL_MAX_PIXELS`` from their header, before decoding: a few KB
of deflated zeros can declare 10 000² float pixels (3.2 GB decoded the old way), and the API runs in 512 Mi.
JPEGs are decoded at a reduced scale (Pillow's draft mode); 16-bit and float gray is scaled to 8 bits as the
workers scale it, in place. At most ``IMGRESTORE_API_THUMBNAIL_CONCURRENCY`` decodes run at once and sizes come
from a fixed set. Results are kept in a small in-process LRU cache keyed by the object's URL and ETag, so a page
refreshing every few seconds costs a HEAD request, not a decode. A document is shown by its first page: a multi-page
TIFF's first frame (the only one decoded), a PDF's first page rendered straight at thumbnail scale once each image it
draws is checked against the pixel limit; a job written as page images shows its first page file.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

import numpy as np
from PIL import Image

from ..errors import ImageDecodeError, UnsupportedImageError
from ..imaging.codecs import check_size, check_supported, decode
from ..imaging.documents import document_kind
from ..storage import StorageRouter, is_s3_url
from .errors import ApiError

JPEG_QUALITY = 80


class ThumbnailCache:
    def __init__(self, max_entries: int = 512) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return data

    def put(self, key: tuple, data: bytes) -> None:
        with self._lock:
            self._items[key] = data
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)


THUMBNAIL_SIZES = (64, 144, 256, 512)  # a few fixed sizes: cache-friendly, and no decode per pixel of ?size=
DEFAULT_SIZE = 144  # what /ui asks for
_BUSY_WAIT = 10.0  # seconds a request waits for a decode slot before a 503
_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                8: Image.Transpose.ROTATE_90}


class Thumbnailer:
    """Memory per decode is bounded by ``max_pixels`` (IMGRESTORE_API_THUMBNAIL_MAX_PIXELS, checked from the header)
    times a few bytes, and at most ``concurrency`` decodes run at once (IMGRESTORE_API_THUMBNAIL_CONCURRENCY)."""

    def __init__(self, storage: StorageRouter, max_pixels: int, max_bytes: int, cache: ThumbnailCache,
                 concurrency: int = 2, job_max_pixels: int | None = None) -> None:
        self.storage = storage
        self.max_pixels = max_pixels
        self.job_max_pixels = job_max_pixels or max_pixels
        self.max_bytes = max_bytes
        self.cache = cache
        self._decodes = threading.BoundedSemaphore(concurrency)

    def thumbnail(self, url: str, size: int) -> tuple[bytes, str]:
        """(JPEG bytes, a validator for ETag) of ``url`` scaled to fit ``size``×``size``."""
        if size not in THUMBNAIL_SIZES:
            raise ApiError(422, "validation", f"size {size} is not offered; thumbnails come in sizes "
                           f"{', '.join(map(str, THUMBNAIL_SIZES))}")
        if not is_s3_url(url):
            raise ApiError(404, "not_found", "thumbnails are served for s3:// images only")
        info = self.storage.s3.head(url)
        if info is None:
            raise ApiError(404, "not_found", f"{url}: no such object")
        if info.size > self.max_bytes:
            raise ApiError(422, "image_too_large", f"{url} is {info.size} bytes; thumbnails are made of images up "
                           f"to {self.max_bytes} bytes (IMGRESTORE_API_THUMBNAIL_MAX_BYTES)")
        key = (url, info.etag, info.size, size)
        validator = f"{info.etag or info.size}-{size}"
        cached = self.cache.get(key)
        if cached is not None:
            return cached, validator
        if not self._decodes.acquire(timeout=_BUSY_WAIT):
            raise ApiError(503, "thumbnail_busy", "every thumbnail decoder is busy; try again shortly",
                           headers={"Retry-After": "2"})
        try:
            data = self.storage.read(url)
            image = self._preview(data, size)
            del data
        finally:
            self._decodes.release()
        out = io.BytesIO()
        image.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
        thumb = out.getvalue()
        self.cache.put(key, thumb)
        return thumb, validator

    def _preview(self, data: bytes, size: int) -> Image.Image:
        """Decodes at reduced size where the codec can (JPEG: 1/2–1/8 scale), brings 16-bit and float pixels to
        8 bits in place (no 64-bit copies), then shrinks; the full-size image is released as early as possible.
        A document (PDF, multi-page TIFF) is shown by its first page."""
        if document_kind(data) == "pdf":
            return self._pdf_first_page(data, size)
        try:
            image = Image.open(io.BytesIO(data))
        except Exception:
            decode(data, self.max_pixels)  # explains what is wrong with the file
            raise ImageDecodeError("not a readable image") from None
        if image.format == "JPEG":  # decoded at 1/2..1/8 scale: the thumbnail limit applies to what is decoded
            check_supported(image, self.job_max_pixels)
            image.draft("RGB" if image.mode not in ("L", "1") else "L", (size, size))
        if image.format == "TIFF":  # a multi-page TIFF opens on its first page, which alone is decoded
            check_size(*image.size, self.max_pixels, _LIMIT)
        else:
            check_supported(image, self.max_pixels, _LIMIT)
        if image.mode == "1":  # bilevel pages: shrunk in gray, so thin strokes become gray instead of vanishing
            image = image.convert("L")
        orientation = image.getexif().get(0x0112)
        try:
            image.load()
            image = _eight_bit(image)
            factor = max(1, max(image.size) // (2 * size))  # keep 2× oversampling for the final LANCZOS
            if factor > 1:
                image = image.reduce(factor)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageDecodeError(f"corrupt or truncated {image.format} data: {exc}") from None
        if image.mode in ("LA", "La", "RGBA", "RGBa"):  # JPEG has no alpha: composite over white, as viewers do
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba).convert("RGB")
        elif image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        if orientation in _ORIENTATION:
            image = image.transpose(_ORIENTATION[orientation])
        return image


    def _pdf_first_page(self, data: bytes, size: int) -> Image.Image:
        """The first page rendered (pypdfium2) straight at thumbnail scale. What pdfium decodes at full size is the
        page's images, so each one (also inside forms) is checked against IMGRESTORE_API_THUMBNAIL_MAX_PIXELS from
        its dictionary first."""
        import pikepdf
        import pypdfium2

        try:
            with pikepdf.open(io.BytesIO(data)) as pdf:
                if not len(pdf.pages):
                    raise ImageDecodeError("the PDF has no pages")
                for width, height in _page_image_sizes(pdf.pages[0].obj):
                    check_size(width, height, self.max_pixels, _LIMIT, where="the first page's image: ")
        except pikepdf.PasswordError:
            raise UnsupportedImageError("the PDF is encrypted with a password; no thumbnail") from None
        except pikepdf.PdfError as exc:
            raise ImageDecodeError(f"corrupt PDF: {exc}") from None
        try:
            document = pypdfium2.PdfDocument(data)
            try:
                page = document[0]
                width, height = page.get_size()
                scale = 2 * size / max(width, height, 1.0)  # 2× oversampling for the final LANCZOS, as for images
                image = page.render(scale=scale, draw_annots=False).to_pil()
                page.close()
            finally:
                document.close()
        except pypdfium2.PdfiumError as exc:
            raise ImageDecodeError(f"the PDF's first page cannot be rendered: {exc}") from None
        image = image.convert("RGB") if image.mode not in ("L", "RGB") else image
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        return image


_LIMIT = ("IMGRESTORE_API_THUMBNAIL_MAX_PIXELS: thumbnails are made of smaller images than jobs, the API's memory "
          "is small")


def _page_image_sizes(holder, seen: set | None = None):
    """(width, height) of every image a PDF page (or form) draws from its resources, forms followed once each."""
    seen = set() if seen is None else seen
    resources = holder.get("/Resources")
    xobjects = resources.get("/XObject") if resources is not None else None
    for _, xobject in (xobjects.items() if xobjects is not None else ()):
        if xobject.objgen in seen and xobject.objgen != (0, 0):
            continue
        seen.add(xobject.objgen)
        if xobject.get("/Subtype") == "/Image":
            yield int(xobject.get("/Width", 0)), int(xobject.get("/Height", 0))
        elif xobject.get("/Subtype") == "/Form":
            yield from _page_image_sizes(xobject, seen)


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit and float gray to 8-bit gray with the workers' scaling (÷257; float [0, 1] or [0, 255]), a band of
    rows at a time, so no full-size float or 64-bit copy ever exists; 8-bit modes are returned as they are."""
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode != "F" and not image.mode.startswith("I"):
        return image
    values = np.asarray(image)  # uint16 (I;16), int32 (I) or float32 (F)
    del image  # the array holds the only full-size copy from here on
    if values.dtype.kind == "f":
        finite_max = max((float(np.nanmax(np.where(np.isfinite(band), band, 0), initial=0.0))
                          for band in _bands(values)), default=0.0)
        scale = np.float32(255.0 if finite_max <= 1.0 else 1.0)
    else:
        scale = np.float32(1 / 257)
    out = np.empty(values.shape, np.uint8)
    for start in range(0, values.shape[0], _BAND):
        band = values[start:start + _BAND].astype(np.float32)
        np.nan_to_num(band, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        band *= scale
        out[start:start + _BAND] = np.rint(np.clip(band, 0, 255, out=band))
    return Image.fromarray(out, "L")


_BAND = 256  # rows converted at a time


def _bands(values: np.ndarray):
    for start in range(0, values.shape[0], _BAND):
        yield values[start:start + _BAND]
