"""training.watermark_masks: Telea under the watermark head's own masks, measured on the shipped model."""

from __future__ import annotations

import pytest

from training.watermark_masks import MODELS_DIR, measure

pytestmark = pytest.mark.skipif(not (MODELS_DIR / "watermark.onnx").is_file(), reason="no shipped watermark model")


def test_masks_come_from_the_shipped_head_and_the_true_mark_is_the_reference() -> None:
    rows = measure(MODELS_DIR / "watermark.onnx", quick=True)
    own, changed = rows["the head's own inversion"], rows["pixels the head changed by more than 2/255"]
    assert rows["the true mark"]["iou"] == 1.0 and rows["the true mark"]["unmarked_worst_psnr"] is None
    assert changed["iou"] == own["iou"] > 0.1  # one mask, the eval's rule, read off the same output
    # The opacity masks come from the shipped weights loaded into the torch head: an untrained head predicts an
    # opacity of about 0.015 everywhere, so its masks would be empty (IoU 0) and leave unmarked images untouched.
    assert rows["the head's predicted opacity > 0.15"]["iou"] > 0.1
    # Telea under the true mark is the eval's reference: it beats inpainting under any of the head's masks.
    assert all(r["marked_psnr"] < rows["the true mark"]["marked_psnr"] for k, r in rows.items() if k != "the true mark")
