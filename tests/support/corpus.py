"""A corpus of awkward and broken image files, made in memory, each with what the service must do with it.

``expect_error`` names the job error type the input must fail with; otherwise the job must succeed and produce
``expect_mode`` at ``expect_size`` (width, height) — or whatever passes the case's own check.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms


@dataclass(frozen=True)
class Case:
    name: str
    filename: str
    data: bytes
    expect_error: str | None = None
    expect_mode: str | None = None
    expect_size: tuple[int, int] | None = None
    expect_format: str | None = None
    check: Callable[[Image.Image], None] | None = None


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _check_pages(count: int) -> Callable[[Image.Image], None]:
    def check(image: Image.Image) -> None:
        assert image.n_frames == count, image.n_frames

    return check


def _check_group4(image: Image.Image) -> None:
    assert image.info.get("compression") == "group4", image.info.get("compression")


def _noise(h: int, w: int, c: int | None = None, seed: int = 0) -> np.ndarray:
    shape = (h, w) if c is None else (h, w, c)
    return (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width``×``height`` but carries almost no data: the classic decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def interlaced_png(pixels: np.ndarray) -> bytes:
    """An Adam7-interlaced 8-bit gray PNG (Pillow reads these but cannot write them)."""
    height, width = pixels.shape
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b""
    for x0, y0, dx, dy in passes:
        sub = pixels[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(raw))
            + _png_chunk(b"IEND", b""))


def _exif_rotated_jpeg() -> bytes:
    image = Image.fromarray(_noise(40, 60, 3))  # 60 wide, 40 high; orientation 6 = rotate 90° CW for display
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(image, "JPEG", exif=exif.tobytes())


def _check_icc(image: Image.Image) -> None:
    profile = image.info.get("icc_profile")
    assert profile and profile[16:20] == b"RGB ", "the sRGB ICC profile was not carried to the output"


def _check_dpi(image: Image.Image) -> None:
    dpi = image.info.get("dpi")
    assert dpi and round(dpi[0]) == 300, f"DPI not preserved: {dpi}"


def _check_no_exif_rotation(image: Image.Image) -> None:
    assert image.getexif().get(0x0112, 1) == 1, "output still carries an EXIF rotation"


def build_corpus() -> list[Case]:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    palette = Image.fromarray(_noise(32, 48, 3)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    gif_frames = [Image.fromarray(_noise(20, 20, seed=s)).convert("P") for s in range(3)]
    tiff_pages = [Image.fromarray(_noise(20, 20, seed=s)) for s in range(2)]
    good_png = _save(Image.fromarray(_noise(64, 64)), "PNG")
    crc_broken = bytearray(good_png)
    crc_broken[29] ^= 0xFF  # inside the IHDR CRC
    float_image = Image.fromarray(np.linspace(0, 1, 30 * 40, dtype=np.float32).reshape(30, 40), mode="F")
    sixteen = Image.fromarray((np.arange(50 * 70).reshape(50, 70) * 17 % 65535).astype(np.uint16))
    return [
        Case("zero-byte", "empty.png", b"", expect_error="image_decode"),
        Case("truncated-png", "cut.png", _save(Image.fromarray(_noise(80, 80, 3)), "PNG")[:300],
             expect_error="image_decode"),
        Case("truncated-jpeg", "cut.jpg", _save(Image.fromarray(_noise(80, 80, 3)), "JPEG")[:700],
             expect_error="image_decode"),
        Case("text-named-jpg", "note.jpg", b"this is not an image\n" * 10, expect_error="image_decode"),
        Case("html-error-page-as-jpg", "page.jpg",
             b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
             expect_error="image_decode"),
        Case("png-bad-crc", "crc.png", bytes(crc_broken), expect_error="image_decode"),
        Case("decompression-bomb", "bomb.png", png_header_only(200_000, 200_000), expect_error="image_too_large"),
        Case("animated-gif", "anim.gif",
             _save(gif_frames[0], "GIF", save_all=True, append_images=gif_frames[1:], duration=50),
             expect_error="image_unsupported"),
        Case("multi-page-tiff", "pages.tif", _save(tiff_pages[0], "TIFF", save_all=True,
                                                     append_images=tiff_pages[1:]), expect_mode="L",
             expect_size=(20, 20), check=_check_pages(2)),  # a document since issue 14: every page restored
        Case("one-by-one", "dot.png", _save(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
             expect_mode="RGB", expect_size=(1, 1)),
        Case("wide-strip-65535", "strip.png", _save(Image.fromarray(_noise(1, 65535)), "PNG"),
             expect_mode="L", expect_size=(65535, 1)),
        Case("sixteen-bit-gray", "deep.png", _save(sixteen, "PNG"), expect_mode="I;16", expect_size=(70, 50)),
        Case("float-tiff", "float.tif", _save(float_image, "TIFF"), expect_mode="I;16", expect_size=(40, 30)),
        Case("cmyk-jpeg", "print.jpg", _save(Image.fromarray(_noise(30, 40, 3)).convert("CMYK"), "JPEG"),
             expect_mode="RGB", expect_size=(40, 30)),
        Case("palette-alpha", "icon.png", _save(palette, "PNG"), expect_mode="RGBA", expect_size=(48, 32)),
        Case("gray-alpha", "la.png", _save(Image.fromarray(np.dstack([_noise(30, 30), _noise(30, 30, seed=1)]),
                                                           mode="LA"), "PNG"), expect_mode="LA", expect_size=(30, 30)),
        Case("exif-rotated", "phone.jpg", _exif_rotated_jpeg(), expect_mode="RGB", expect_size=(40, 60),
             check=_check_no_exif_rotation),
        Case("icc-profile", "srgb.png", _save(Image.fromarray(_noise(30, 30, 3)), "PNG", icc_profile=srgb),
             expect_mode="RGB", expect_size=(30, 30), check=_check_icc),
        Case("dpi-300-tiff", "scan.tif", _save(Image.fromarray(_noise(40, 30)), "TIFF", dpi=(300, 300)),
             expect_mode="L", expect_size=(30, 40), check=_check_dpi),
        Case("interlaced-png", "adam7.png", interlaced_png(_noise(37, 53)), expect_mode="L", expect_size=(53, 37)),
        Case("progressive-jpeg", "prog.jpg", _save(Image.fromarray(_noise(48, 64, 3)), "JPEG", progressive=True),
             expect_mode="RGB", expect_size=(64, 48)),
        Case("all-black", "black.png", _save(Image.new("L", (50, 40), 0), "PNG"), expect_mode="L",
             expect_size=(50, 40)),
        # A restored page that is exactly black and white is written 1-bit (lossless, smallest): codecs.encode
        Case("all-white", "white.png", _save(Image.new("L", (50, 40), 255), "PNG"), expect_mode="1",
             expect_size=(50, 40)),
        Case("one-bit-tiff", "fax.tif", _save(Image.fromarray(_noise(40, 64) > 128), "TIFF", compression="group4"),
             expect_mode="1", expect_size=(64, 40), check=_check_group4),  # bilevel stays bilevel (issue 14)
        Case("rgba-webp", "alpha.webp", _save(Image.fromarray(np.dstack([_noise(30, 30, 3), _noise(30, 30)])),
                                              "WEBP", lossless=True), expect_mode="RGBA", expect_size=(30, 30)),
        Case("bmp", "old.bmp", _save(Image.fromarray(_noise(20, 30, 3)), "BMP"), expect_mode="RGB",
             expect_size=(30, 20)),
        Case("single-frame-gif", "still.gif", _save(gif_frames[0], "GIF"), expect_mode="RGB", expect_size=(20, 20),
             expect_format="PNG"),
        Case("png-named-jpg", "misnamed.jpg", good_png, expect_mode="L", expect_size=(64, 64), expect_format="PNG"),
    ]
