"""Small JPEG previews of a job's input and output for the status page: the only place the API touches pixels.

Images are read through ``StorageRouter`` (s3:// only), refused above ``IMGRESTORE_API_THUMBNAIL_MAX_BYTES`` before
they are downloaded, and decoded under ``IMGRESTORE_MAX_PIXELS`` (checked from the header). JPEGs are decoded at a
reduced scale (Pillow's draft mode); everything else goes through ``services.imaging.decode``, so 16-bit, float,
CMYK and palette images look as the workers see them. Results are kept in a small in-process LRU cache keyed by
the object's URL and ETag, so a page refreshing every few seconds costs a HEAD request, not a decode.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

import numpy as np
from PIL import Image, ImageOps

from ..errors import ImageDecodeError, ImageTooLargeError
from ..imaging import decode, to_uint8
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


class Thumbnailer:
    def __init__(self, storage: StorageRouter, max_pixels: int, max_bytes: int, cache: ThumbnailCache) -> None:
        self.storage = storage
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self.cache = cache

    def thumbnail(self, url: str, size: int) -> tuple[bytes, str]:
        """(JPEG bytes, a validator for ETag) of ``url`` scaled to fit ``size``×``size``."""
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
        data = self.storage.read(url)
        image = self._preview(data, size)
        out = io.BytesIO()
        image.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
        thumb = out.getvalue()
        self.cache.put(key, thumb)
        return thumb, validator

    def _preview(self, data: bytes, size: int) -> Image.Image:
        try:
            probe = Image.open(io.BytesIO(data))
        except Exception:
            probe = None  # decode() below explains what is wrong with it
        if probe is not None and probe.format == "JPEG":
            width, height = probe.size
            if width * height > self.max_pixels:
                raise ImageTooLargeError(f"{width}×{height} exceeds the limit of {self.max_pixels} pixels "
                                         "(IMGRESTORE_MAX_PIXELS)")
            try:
                probe.draft("RGB", (size, size))  # decode at 1/2, 1/4 or 1/8 scale: cheap previews of big photos
                image = ImageOps.exif_transpose(probe.convert("RGB"))
            except (OSError, SyntaxError, ValueError) as exc:
                raise ImageDecodeError(f"corrupt or truncated JPEG data: {exc}") from None
        else:
            decoded = decode(data, self.max_pixels)
            pixels = to_uint8(decoded.pixels)
            if decoded.alpha is not None:  # JPEG has no alpha: composite over white, as viewers show it
                alpha = to_uint8(decoded.alpha).astype(np.float32)[..., None] / 255.0
                pixels = np.round(pixels * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
            image = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        return image if image.mode in ("L", "RGB") else image.convert("RGB")
