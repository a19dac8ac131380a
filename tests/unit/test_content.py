import numpy as np
import pytest

from services.inference.content import colourfulness, guess_profile, upper_decile


def _page() -> np.ndarray:
    rng = np.random.default_rng(0)
    page = np.full((600, 450), 235, np.uint8)
    for row in range(40, 560, 24):  # lines of "text"
        page[row:row + 9, 40:410] = np.where(rng.random((9, 370)) < 0.45, 30, 235)
    return page[..., None]


def test_a_page_is_a_document_and_a_colour_photo_is_not():
    assert guess_profile(_page()) == "document"
    assert guess_profile(np.repeat(_page(), 3, axis=2)) == "document"
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:300, 0:400]
    photo = np.stack([xx * 255 // 400, yy * 255 // 300, 255 - xx * 255 // 400], axis=2).astype(np.uint8)
    photo = np.clip(photo + rng.normal(0, 10, photo.shape), 0, 255).astype(np.uint8)
    assert guess_profile(photo) == "photo"
    assert guess_profile((photo @ np.array([0.299, 0.587, 0.114]))[..., None].astype(np.uint8)) == "photo"


def test_colourfulness_is_zero_for_gray():
    gray = np.full((10, 10, 3), 128, np.uint8)
    assert colourfulness(gray) == 0.0
    assert colourfulness(np.dstack([gray[..., 0] + 100, gray[..., 1], gray[..., 2] - 100])) > 50


def test_upper_decile_is_numpys_90th_percentile():
    rng = np.random.default_rng(3)
    for size in (1, 2, 7, 10, 11, 4096, 65537):
        values = (rng.random(size) * 255).astype(np.float32)
        assert upper_decile(values) == pytest.approx(float(np.percentile(values, 90)), rel=1e-6, abs=1e-4)
    assert upper_decile(np.full((16, 16), 200.0, dtype=np.float32)) == 200.0
