import io
import re

import numpy as np
import pytest
from PIL import Image

from services.errors import ImageDecodeError, ImageTooLargeError, UnsupportedImageError
from services.imaging.codecs import decode, encode, normalize_format
from tests.support.corpus import build_corpus, png_header_only

CORPUS = {case.name: case for case in build_corpus()}
ERRORS = {"image_decode": ImageDecodeError, "image_too_large": ImageTooLargeError,
          "image_unsupported": UnsupportedImageError}


# What each bad input's message must tell the user: the cause, in words they can act on.
REASONS = {
    "zero-byte": r"^empty file \(0 bytes\)$",
    "truncated-png": r"^corrupt or truncated PNG data",
    "truncated-jpeg": r"^corrupt or truncated JPEG data",
    "text-named-jpg": r"^not a recognised image format \(file starts with b'this is not",
    "html-error-page-as-jpg": r"^not a recognised image format \(file starts with b'<!DOCTYPE html",
    "png-bad-crc": r"^corrupt PNG file",
    "decompression-bomb": r"^200000×200000 = 40000\.0 MP exceeds the limit of 100\.0 MP \(IMGRESTORE_MAX_PIXELS\)$",
    "animated-gif": r"^animated GIF with 3 frames; split it into single images first$",
}


def test_every_bad_input_of_the_corpus_has_its_reason_checked():
    assert set(REASONS) == {n for n, c in CORPUS.items() if c.expect_error}


@pytest.mark.parametrize("name", sorted(REASONS))
def test_bad_inputs_raise_a_specific_error_with_a_reason(name):
    case = CORPUS[name]
    with pytest.raises(ERRORS[case.expect_error]) as info:
        decode(case.data, max_pixels=100_000_000)
    assert re.search(REASONS[name], info.value.message), info.value.message


def test_pixel_limit_is_checked_from_the_header():
    data = png_header_only(20_000, 10_000)  # 200 MP claimed, a few hundred bytes on disk
    with pytest.raises(ImageTooLargeError, match="200.0 MP exceeds the limit of 100.0 MP"):
        decode(data, max_pixels=100_000_000)
    small = io.BytesIO()
    Image.new("L", (100, 100)).save(small, "PNG")
    with pytest.raises(ImageTooLargeError):
        decode(small.getvalue(), max_pixels=9_999)
    assert decode(small.getvalue(), max_pixels=10_000).pixels.shape == (100, 100, 1)


def test_exif_orientation_is_applied():
    image = decode(CORPUS["exif-rotated"].data, 10**8)
    assert image.pixels.shape[:2] == (60, 40)  # stored 60 wide × 40 high, orientation 6 → displayed 40 × 60


def test_modes_become_one_or_three_channels_with_alpha_apart():
    assert decode(CORPUS["palette-alpha"].data, 10**8).alpha is not None
    la = decode(CORPUS["gray-alpha"].data, 10**8)
    assert la.channels == 1 and la.alpha is not None
    cmyk = decode(CORPUS["cmyk-jpeg"].data, 10**8)
    assert cmyk.channels == 3 and cmyk.alpha is None
    deep = decode(CORPUS["sixteen-bit-gray"].data, 10**8)
    assert deep.pixels.dtype == np.uint16 and deep.pixels.max() > 255


def test_float_tiff_follows_the_documented_rule():
    pixels = decode(CORPUS["float-tiff"].data, 10**8).pixels
    assert pixels.dtype == np.uint16
    assert pixels.min() == 0 and pixels.max() == 65535  # linspace 0..1 → full 16-bit range


def test_encode_keeps_alpha_icc_and_dpi():
    case = CORPUS["icc-profile"]
    image = decode(case.data, 10**8)
    out = encode(image.pixels, image.alpha, "PNG", icc_profile=image.icc_profile, dpi=(300.0, 300.0))
    back = Image.open(io.BytesIO(out.data))
    assert back.info["icc_profile"] == image.icc_profile
    assert round(back.info["dpi"][0]) == 300
    la = decode(CORPUS["gray-alpha"].data, 10**8)
    out = encode(la.pixels, la.alpha, "PNG")
    assert out.mode == "LA"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(out.data)).getchannel("A")), la.alpha)


def test_sixteen_bit_survives_png_but_not_jpeg():
    pixels = (np.arange(64 * 64).reshape(64, 64, 1) * 13 % 65535).astype(np.uint16)
    png = encode(pixels, None, "PNG")
    assert png.mode == "I;16"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png.data))), pixels[..., 0])
    assert encode(pixels, None, "JPEG").mode == "L"


def test_jpeg_quality_is_applied_and_alpha_flattened_on_white():
    rng = np.random.default_rng(0)
    pixels = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    low = encode(pixels, None, "JPEG", jpeg_quality=20).data
    high = encode(pixels, None, "JPEG", jpeg_quality=95).data
    assert len(low) < len(high)
    alpha = np.zeros((64, 64), np.uint8)
    flat = encode(pixels, alpha, "JPEG")
    assert flat.mode == "RGB"
    assert np.asarray(Image.open(io.BytesIO(flat.data))).min() > 240  # fully transparent → white


def test_output_format_names():
    assert normalize_format("jpg") == "JPEG" and normalize_format(".TIF") == "TIFF"
    with pytest.raises(UnsupportedImageError, match="png, jpeg, tiff, webp, bmp"):
        normalize_format("heic")


# --- PNG of document pages: unfiltered gray with run-length matching, 1 bit when the page is exactly black/white ---
def _png_row_filters(data: bytes) -> set[int]:
    """The filter byte of every row of an 8-bit single-channel PNG (what the encoder chose)."""
    import struct
    import zlib

    idat, position, width = b"", 8, struct.unpack(">I", data[16:20])[0]
    while position < len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        if data[position + 4:position + 8] == b"IDAT":
            idat += data[position + 8:position + 8 + length]
        position += 12 + length
    return set(zlib.decompress(idat)[::width + 1])


def _restored_sample_page() -> tuple[bytes, np.ndarray]:
    """The shipped dirty sample page and what the shipped doc-denoise model makes of it."""
    from pathlib import Path

    from services.config import Settings
    from services.jobs import Job
    from services.restorer import Restorer

    data = (Path(__file__).resolve().parents[2] / "samples" / "documents" / "dirty-page-1.png").read_bytes()
    job = Job(task="denoise", profile="document", input_url="memory://in", output_url="memory://out")
    output, _, _ = Restorer(Settings()).infer(job, decode(data, 10**8).pixels)
    return data, output.pixels


def _pillow_level_1(pixels: np.ndarray) -> bytes:
    """How encode() wrote every gray PNG before: Pillow's adaptive filters at zlib level 1."""
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0]).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def test_a_restored_page_is_written_as_unfiltered_gray_with_its_exact_pixels_and_metadata():
    rng = np.random.default_rng(3)
    page = np.full((300, 240, 1), 255, np.uint8)
    page -= rng.integers(0, 12, page.shape, dtype=np.uint8)  # paper speckle the model leaves, 244–255
    page[40:60, 20:200] = rng.integers(0, 60, (20, 180, 1), dtype=np.uint8)  # a line of ink
    out = encode(page, None, "PNG", dpi=(300.0, 300.0), content="document")
    back = Image.open(io.BytesIO(out.data))
    assert out.mode == "L" and back.mode == "L"  # gray colour type, not the palette the encoder went through
    assert np.array_equal(np.asarray(back), page[..., 0])
    assert round(back.info["dpi"][0]) == 300
    assert _png_row_filters(out.data) == {0}
    assert np.array_equal(decode(out.data, 10**8).pixels, page)


def test_a_page_of_only_black_and_white_is_written_with_one_bit_per_pixel_losslessly():
    page = np.full((200, 160, 1), 255, np.uint8)
    page[50:70, 10:150] = 0
    out = encode(page, None, "PNG", content="document")
    assert out.mode == "1" and Image.open(io.BytesIO(out.data)).mode == "1"
    assert np.array_equal(decode(out.data, 10**8).pixels, page)


def test_photos_and_gray_pages_with_a_gray_profile_keep_the_adaptive_filters():
    ramp = np.tile(np.arange(256, dtype=np.uint8), (64, 1))[..., None]  # continuous tone: not a page
    photo = encode(ramp, None, "PNG", content="photo")
    assert photo.mode == "L" and np.array_equal(decode(photo.data, 10**8).pixels, ramp)
    assert _png_row_filters(photo.data) != {0}
    rgb_profile = decode(CORPUS["icc-profile"].data, 10**8).icc_profile
    gray_profile = rgb_profile[:16] + b"GRAY" + rgb_profile[20:]  # what encode() reads: the header's colour space
    page = np.full((64, 64, 1), 250, np.uint8)
    page[::7] = 20
    kept = encode(page, None, "PNG", icc_profile=gray_profile, content="document")
    assert Image.open(io.BytesIO(kept.data)).info["icc_profile"] == gray_profile
    assert np.array_equal(decode(kept.data, 10**8).pixels, page)


@pytest.mark.slow
def test_a_restored_sample_page_is_written_exactly_and_much_smaller_than_before():
    dirty, restored = _restored_sample_page()
    out = encode(restored, None, "PNG", content="document")
    assert np.array_equal(decode(out.data, 10**8).pixels, restored)
    before = _pillow_level_1(restored)
    # Measured 0.77× (bench/results/codecs.md); the old encoding was 2.30× the dirty input, this is 1.78×.
    assert len(out.data) < 0.85 * len(before), (len(out.data), len(before), len(dirty))


# --- 16-bit and float gray decode in 2 bytes a pixel (issue 11, finding 4) ------------------------------------------
def _decode_peak_bytes(data: bytes) -> int:
    """Peak of the allocations Python and numpy make while ``decode`` runs (tracemalloc: exact, not timing)."""
    import tracemalloc

    tracemalloc.start()
    try:
        decode(data, 10**8)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind", ["16-bit PNG", "float32 TIFF"])
def test_deep_gray_images_decode_without_64_bit_copies(kind):
    page = np.random.default_rng(5).integers(0, 256, (2000, 2000), dtype=np.uint8)  # 4 MP: bands are small
    eight = io.BytesIO()
    Image.fromarray(page).save(eight, "PNG", compress_level=1)
    deep = io.BytesIO()
    if kind == "16-bit PNG":
        Image.fromarray(page.astype(np.uint16) * 257).save(deep, "PNG", compress_level=1)
    else:
        Image.fromarray(page.astype(np.float32) / 255).save(deep, "TIFF", compression="tiff_adobe_deflate")
    ratio = _decode_peak_bytes(deep.getvalue()) / _decode_peak_bytes(eight.getvalue())
    # The result is uint16, 2 bytes a pixel against 8-bit's 1; int64/float64 intermediates made it 8× (16-bit)
    # and 12× (float) before.
    assert ratio < 3.0, f"{kind} decode peaks at {ratio:.1f}× the 8-bit decode of the same page"
    assert np.array_equal(decode(deep.getvalue(), 10**8).pixels[..., 0], page.astype(np.uint16) * 257)
