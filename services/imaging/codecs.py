"""Decoding and encoding with limits and colour handling.

Decode rules (documented in README.md, "Images"):
- PNG, JPEG (and MPO), TIFF, WebP, BMP and single-frame GIF; EXIF orientation is applied.
- Colour becomes 1 channel (``1``, ``L``, ``LA``, 16-bit and float gray) or 3 channels (everything else); alpha is
  split off and carried through untouched. ``P`` becomes RGB(A); ``CMYK``/``YCbCr``/``LAB`` become RGB (written
  back as RGB; a CMYK ICC profile is dropped because it no longer describes the pixels).
- 16-bit rule: ``I;16*`` and ``I`` gray are kept at 16 bits (``I`` clipped to 0‥65535); ``F`` float gray is read
  as [0, 1] when its maximum is ≤ 1, else as [0, 255], and kept at 16 bits. 16-bit gray is written as 16-bit where
  the format allows it (PNG, TIFF) and scaled to 8 bits elsewhere. 48/64-bit RGB(A) is read by Pillow as 8-bit.
- Animated images and multi-page TIFFs are refused (the job fails with the page count), never half-processed.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps

from ..errors import ImageDecodeError, ImageEncodeError, ImageTooLargeError, UnsupportedImageError

# Our own limit (IMGRESTORE_MAX_PIXELS, checked from the header before any pixel is decoded) replaces Pillow's
# fixed one, which would otherwise refuse images a deployment has chosen to allow.
Image.MAX_IMAGE_PIXELS = None

# Pillow format name -> what we write when the output keeps the input's format.
OUTPUT_FORMAT_OF = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "TIFF": "TIFF", "WEBP": "WEBP", "BMP": "BMP", "GIF": "PNG"}
EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "WEBP": ".webp", "BMP": ".bmp"}
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "TIFF": "image/tiff", "WEBP": "image/webp", "BMP": "image/bmp"}
FORMAT_ALIASES = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "tif": "TIFF", "tiff": "TIFF", "webp": "WEBP", "bmp": "BMP"}
# Outputs only a document (PDF, multi-page or bilevel TIFF) is written as (services/imaging/documents.py): a PDF, or a
# folder (S3: a prefix) with one image file per page in the format named.
PAGE_FOLDER_FORMATS = {"PNG-PAGES": "PNG", "JPEG-PAGES": "JPEG", "TIFF-PAGES": "TIFF"}
DOCUMENT_ONLY_FORMATS = frozenset({"PDF", *PAGE_FOLDER_FORMATS})
FORMAT_ALIASES.update({"pdf": "PDF", "png-pages": "PNG-PAGES", "jpg-pages": "JPEG-PAGES", "jpeg-pages": "JPEG-PAGES",
                       "tif-pages": "TIFF-PAGES", "tiff-pages": "TIFF-PAGES"})
EXTENSIONS["PDF"] = ".pdf"

_SIXTEEN_BIT_FORMATS = {"PNG", "TIFF"}
_ALPHA_FORMATS = {"PNG", "TIFF", "WEBP"}
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_RGB_MODES = {"RGB", "RGBA", "RGBa", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"}


@dataclass
class DecodedImage:
    """Pixels as uint8 or uint16 ``(H, W, C)`` with C in {1, 3}; alpha (same dtype, ``(H, W)``) kept apart."""

    pixels: np.ndarray
    alpha: np.ndarray | None
    format: str  # Pillow's name of the source format
    source_mode: str
    icc_profile: bytes | None = None
    dpi: tuple[float, float] | None = None
    exif: bytes | None = None
    extra: dict = field(default_factory=dict)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[2])

    @property
    def output_format(self) -> str:
        """The format a result is written in unless the job asks for another."""
        return OUTPUT_FORMAT_OF[self.format]

    @property
    def megapixels(self) -> float:
        return self.height * self.width / 1e6


def normalize_format(name: str | None) -> str | None:
    if name is None:
        return None
    fmt = FORMAT_ALIASES.get(name.strip().lower().lstrip("."))
    if fmt is None:
        raise UnsupportedImageError(f"output format {name!r} is not supported; use one of png, jpeg, tiff, webp, bmp "
                                    "(documents also: pdf, png-pages, jpeg-pages, tiff-pages)")
    return fmt


def check_size(width: int, height: int, max_pixels: int, limit_name: str, subject: str = "image",
               where: str = "") -> None:
    """Refuses an image (or a document's page: ``subject``/``where`` name it) with no pixels or more than
    ``max_pixels``, naming the setting that sets the limit."""
    if width < 1 or height < 1:
        raise ImageDecodeError(f"{subject} has no pixels ({width}×{height})")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{where}{width}×{height} = {width * height / 1e6:.1f} MP exceeds the limit of {max_pixels / 1e6:.1f} MP "
            f"({limit_name})"
        )


def decode(data: bytes, max_pixels: int) -> DecodedImage:
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except Exception:  # UnidentifiedImageError, or assorted errors on malformed headers
        looks_like = _sniff(data)
        if looks_like:
            raise ImageDecodeError(f"corrupt {looks_like} file: its header cannot be read")
        raise ImageDecodeError(f"not a recognised image format (file starts with {data[:16]!r})")
    check_supported(image, max_pixels)
    fmt, info = image.format, dict(image.info)
    try:
        image.load()
        image = ImageOps.exif_transpose(image) or image
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"corrupt or truncated {fmt} data: {exc}")
    return _to_arrays(image, fmt, info)


_MAGIC = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"II*\x00": "TIFF", b"MM\x00*": "TIFF",
          b"BM": "BMP"}


def _sniff(data: bytes) -> str | None:
    """The format a file's first bytes claim, to tell "corrupt PNG" from "not an image"."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((name for magic, name in _MAGIC.items() if data.startswith(magic)), None)


def check_supported(image: Image.Image, max_pixels: int, limit_name: str = "IMGRESTORE_MAX_PIXELS") -> None:
    """Refuses, from the header alone, what cannot or must not be decoded: unknown formats and modes, animations,
    and more than ``max_pixels`` pixels (``limit_name`` says which setting sets it)."""
    if image.format not in OUTPUT_FORMAT_OF:
        raise UnsupportedImageError(f"{image.format} images are not supported; use PNG, JPEG, TIFF, WebP or BMP")
    frames = getattr(image, "n_frames", 1)
    if frames > 1 and image.format != "MPO":  # MPO's extra frames are camera previews/depth maps
        kind = "multi-page TIFF" if image.format == "TIFF" else f"animated {image.format}"
        raise UnsupportedImageError(f"{kind} with {frames} frames; split it into single images first")
    width, height = image.size
    check_size(width, height, max_pixels, limit_name)
    if image.mode not in _GRAY_MODES | _RGB_MODES:
        raise UnsupportedImageError(f"pixel mode {image.mode} is not supported")


def _to_arrays(image: Image.Image, fmt: str, info: dict) -> DecodedImage:
    mode = image.mode
    icc = info.get("icc_profile") or None
    alpha = None
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):  # already unsigned 16-bit: read as is, in native byte order
        pixels = np.asarray(image).astype(np.uint16, copy=False)[..., None]
    elif mode == "I":
        pixels = _bands_to_uint16(image, lambda rows: np.clip(rows, 0, 65535))[..., None]
    elif mode == "F":
        scale = 1.0 if _finite_max(image) <= 1.0 else 255.0
        pixels = _bands_to_uint16(image, lambda rows: _unit_float_to_uint16(rows, scale))[..., None]
    elif mode in ("1", "L", "LA", "La"):
        if mode in ("LA", "La"):
            image = image.convert("LA")
            alpha = np.asarray(image.getchannel("A"))
        # convert() copies even when the mode already matches: skip it for the common case (big pages).
        pixels = np.asarray(image if mode == "L" else image.convert("L"))[..., None]
    else:
        has_alpha = mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in info)
        if has_alpha:
            image = image.convert("RGBA")
            alpha = np.asarray(image.getchannel("A"))
        if mode == "CMYK" or (icc and _icc_space(icc) not in (b"RGB ", None)):
            icc = None
        pixels = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    dpi = info.get("dpi")
    exif = image.getexif()
    return DecodedImage(
        pixels=np.ascontiguousarray(pixels),
        alpha=None if alpha is None else np.ascontiguousarray(alpha),
        format=fmt,
        source_mode=mode,
        icc_profile=icc,
        dpi=(float(dpi[0]), float(dpi[1])) if dpi else None,
        exif=exif.tobytes() if len(exif) else None,
    )


# 32-bit gray (``I``, ``F``) is converted a band of rows at a time: whole-image int64/float64 copies made a 100 MP
# float TIFF peak at 3.4 GB (issue 11, finding 4); bands keep the transient at a few MB, and 64-bit arithmetic
# within a band keeps the values exactly what they were.
_BAND_PIXELS = 1 << 18


def _row_bands(image: Image.Image) -> Iterator[tuple[int, np.ndarray]]:
    width, height = image.size
    rows = max(1, _BAND_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        yield top, np.asarray(image.crop((0, top, width, min(height, top + rows))))


def _bands_to_uint16(image: Image.Image, convert: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    width, height = image.size
    out = np.empty((height, width), dtype=np.uint16)
    for top, rows in _row_bands(image):
        out[top:top + rows.shape[0]] = convert(rows)
    return out


def _finite(rows: np.ndarray) -> np.ndarray:
    """NaN and ±inf read as 0."""
    return np.where(np.isfinite(rows), rows, 0.0)


def _unit_float_to_uint16(rows: np.ndarray, scale: float) -> np.ndarray:
    """Float gray on [0, scale] → 0‥65535, in place in one float64 copy of the band."""
    values = _finite(rows).astype(np.float64)
    values /= scale
    np.clip(values, 0.0, 1.0, out=values)
    values *= 65535
    return np.round(values, out=values)


def _finite_max(image: Image.Image) -> float:
    return max((float(_finite(rows).max(initial=0.0)) for _, rows in _row_bands(image)), default=0.0)


def _icc_space(icc: bytes) -> bytes | None:
    """The data colour space signature in an ICC header (b'RGB ', b'GRAY', b'CMYK'…)."""
    return icc[16:20] if len(icc) >= 20 else None


@dataclass(frozen=True)
class EncodedImage:
    data: bytes
    format: str
    mode: str

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


def encode(
    pixels: np.ndarray,
    alpha: np.ndarray | None,
    fmt: str,
    *,
    jpeg_quality: int = 95,
    png_compress_level: int = 1,
    icc_profile: bytes | None = None,
    dpi: tuple[float, float] | None = None,
    exif: bytes | None = None,
    content: str | None = None,
) -> EncodedImage:
    """Writes ``pixels`` (uint8/uint16, (H, W, 1|3)) and optional alpha in ``fmt``, keeping what metadata fits.

    ``content`` is what the caller knows the image shows (``"document"`` or ``"photo"``, the restorer's content
    profile); the codec never guesses it. PNG is lossless whatever the content: 8-bit gray documents are written with
    unfiltered rows, or 1 bit per pixel when they hold only black and white; ``png_compress_level`` 1 (the default) uses zlib's
    run-length matching for 8-bit gray and RGB, other levels zlib's default matcher at that level."""
    image = _to_pil(pixels, alpha, fmt)
    kwargs: dict = {}
    if icc_profile and _icc_space(icc_profile) == (b"GRAY" if image.mode in ("L", "LA", "I;16") else b"RGB "):
        kwargs["icc_profile"] = icc_profile
    if dpi and fmt != "WEBP":
        kwargs["dpi"] = dpi
    if exif and fmt in ("JPEG", "PNG", "TIFF", "WEBP"):
        kwargs["exif"] = exif
    if fmt == "JPEG":
        kwargs.update(quality=jpeg_quality, optimize=False)
    elif fmt == "WEBP":
        kwargs.update(quality=jpeg_quality, method=4)
    elif fmt == "TIFF":
        kwargs.update(compression="tiff_adobe_deflate")
    elif fmt == "PNG":
        kwargs.update(compress_level=png_compress_level)
    page_layout = _page_png_layout(pixels, image, kwargs) if fmt == "PNG" and content == "document" else None
    if page_layout == "bilevel":
        image = image.convert("1")  # exactly 0 and 255: 1 bit per pixel loses nothing
    elif page_layout == "gray-unfiltered":
        image = _as_identity_palette(pixels)
    if fmt == "PNG" and png_compress_level == 1 and image.mode in ("L", "RGB", "P"):
        kwargs["compress_type"] = zlib.Z_RLE  # faster and smaller than zlib's default matcher at level 1
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ImageEncodeError(f"could not write {fmt} ({image.mode} {image.width}×{image.height}): {exc}")
    if page_layout == "gray-unfiltered":
        return EncodedImage(_identity_palette_png_as_gray(buffer.getvalue()), fmt, "L")
    return EncodedImage(buffer.getvalue(), fmt, image.mode)


# --- PNG of document pages (bench/codecs.py has the figures) ------------------------------------------------------
# A restored page is paper at 240–255 with a little ink. Pillow's adaptive row filters turn that paper's low-amplitude
# speckle into large residuals, and zlib's default matcher finds little in them; unfiltered rows with run-length
# matching (Z_RLE) take ~0.4× the time and 0.77× the bytes of Pillow's level 1, identical pixels. Pillow has no
# filter option, but writes a palette image unfiltered: an 8-bit identity gray palette ("P" index = gray level) gives
# exactly the IDAT of an unfiltered 8-bit gray PNG, so the file is then relabelled gray (colour type 0) and keeps
# every metadata chunk (OpenCV writes the same bytes but no ICC, DPI or EXIF, and would be a new dependency).
_IDENTITY_GRAY_PALETTE = bytes(np.repeat(np.arange(256, dtype=np.uint8), 3))


def _page_png_layout(pixels: np.ndarray, image: Image.Image, kwargs: dict) -> str | None:
    """How to write an 8-bit gray document page: ``bilevel`` when it holds only 0 and 255, ``gray-unfiltered`` for
    other pages, None (Pillow's defaults) for colour, alpha and 16-bit images."""
    if image.mode != "L" or pixels.dtype != np.uint8 or pixels.shape[2] != 1:
        return None
    step = max(1, max(pixels.shape[:2]) // 256)
    if _only_black_and_white(pixels[::step, ::step]) and _only_black_and_white(pixels):
        return "bilevel"
    if "icc_profile" in kwargs:  # a gray profile must stay on a gray image; the palette detour would drop it
        return None
    return "gray-unfiltered"


def _only_black_and_white(pixels: np.ndarray) -> bool:
    return not np.any((pixels != 0) & (pixels != 255))


def _as_identity_palette(pixels: np.ndarray) -> Image.Image:
    """Gray pixels (H, W, 1) read as palette indices of an identity gray palette, without a copy."""
    plane = np.ascontiguousarray(pixels[..., 0])
    palette = Image.frombuffer("P", (plane.shape[1], plane.shape[0]), plane, "raw", "P", 0, 1)
    palette.putpalette(_IDENTITY_GRAY_PALETTE)
    return palette


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, position = [], 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        chunks.append((data[position + 4:position + 8], data[position + 8:position + 8 + length]))
        position += 12 + length
    return chunks


def _identity_palette_png_as_gray(data: bytes) -> bytes:
    """An 8-bit PNG of an identity gray palette rewritten as 8-bit gray: IHDR colour type 3 → 0, PLTE dropped; the
    IDAT bytes mean the same pixels in both."""
    out = [data[:8]]
    for kind, body in _png_chunks(data):
        if kind == b"PLTE":
            continue
        if kind == b"IHDR":
            if body[8:10] != b"\x08\x03":
                raise ImageEncodeError(f"unexpected PNG header from the palette encoder: {body!r}")
            body = body[:9] + b"\x00" + body[10:]
        out.append(struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body)))
    return b"".join(out)


def _to_pil(pixels: np.ndarray, alpha: np.ndarray | None, fmt: str) -> Image.Image:
    channels = pixels.shape[2]
    sixteen = pixels.dtype == np.uint16
    if sixteen and (channels == 3 or fmt not in _SIXTEEN_BIT_FORMATS or alpha is not None):
        pixels, sixteen = to_uint8(pixels), False
    if alpha is not None and alpha.dtype != np.uint8:
        alpha = to_uint8(alpha)
    if fmt == "JPEG" and alpha is not None:
        pixels, alpha = _flatten_on_white(pixels, alpha), None
    if alpha is not None and fmt not in _ALPHA_FORMATS and fmt != "BMP":
        alpha = None
    # Pillow infers the mode from shape and dtype: (H, W) uint16 → I;16, uint8 → L, (H, W, 2|3|4) → LA|RGB|RGBA.
    if sixteen:
        return Image.fromarray(np.ascontiguousarray(pixels[..., 0]))
    if channels == 1 and fmt == "WEBP":  # WebP has no gray mode
        pixels = np.repeat(pixels, 3, axis=2)
    planes = pixels if alpha is None else np.dstack([pixels, alpha])
    return Image.fromarray(np.ascontiguousarray(planes[..., 0] if planes.shape[2] == 1 else planes))


def _flatten_on_white(pixels: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """JPEG has no alpha: composite over white, as viewers show a transparent image."""
    a = alpha.astype(np.float32)[..., None] / 255.0
    return np.round(pixels.astype(np.float32) * a + 255.0 * (1.0 - a)).astype(np.uint8)


def to_uint8(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.uint8:
        return values
    return np.round(values.astype(np.float32) / 257.0).astype(np.uint8)


# --- hooks for documents.py (multi-page TIFF and PDF pages share the single-image colour rules above) -------------
def frame_arrays(image: Image.Image, fmt: str) -> DecodedImage:
    """One loaded page of a document, checked by the caller, as ``decode`` would give it."""
    return _to_arrays(image, fmt, dict(image.info))


def arrays_image(pixels: np.ndarray, fmt: str) -> Image.Image:
    """Restored pixels as the Pillow image ``encode`` would write in ``fmt`` (no alpha: document pages have none)."""
    return _to_pil(pixels, None, fmt)
