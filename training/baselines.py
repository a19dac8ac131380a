"""Classical baselines the production models are compared against (float images in [0, 1] in and out)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np


def _u8(img: np.ndarray) -> np.ndarray:
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def otsu(gray: np.ndarray) -> np.ndarray:
    from skimage.filters import threshold_otsu

    return (gray > threshold_otsu(gray)).astype(np.float32)


def sauvola(gray: np.ndarray, window_size: int = 25) -> np.ndarray:
    from skimage.filters import threshold_sauvola

    return (gray > threshold_sauvola(gray, window_size=window_size)).astype(np.float32)


def nlm_gray(gray: np.ndarray, h: float) -> np.ndarray:
    return cv2.fastNlMeansDenoising(_u8(gray), None, h=h, templateWindowSize=7, searchWindowSize=21) / 255.0


def nlm_rgb(rgb: np.ndarray, h: float) -> np.ndarray:
    bgr = _u8(rgb)[..., ::-1].copy()
    out = cv2.fastNlMeansDenoisingColored(bgr, None, h=h, hColor=h, templateWindowSize=7, searchWindowSize=21)
    return out[..., ::-1].astype(np.float32) / 255.0


def tv_rgb(rgb: np.ndarray, weight255: float) -> np.ndarray:
    """Total-variation denoising (Chambolle), weight on the 0–255 scale of σ."""
    from skimage.restoration import denoise_tv_chambolle

    return np.clip(denoise_tv_chambolle(rgb, weight=weight255 / 255.0, channel_axis=-1), 0, 1).astype(np.float32)


def bm3d_rgb(rgb: np.ndarray, sigma255: float) -> np.ndarray:
    """CBM3D (colour BM3D in a luminance–chrominance space), told the true σ."""
    import bm3d

    return np.clip(bm3d.bm3d_rgb(rgb, sigma_psd=sigma255 / 255.0), 0, 1).astype(np.float32)


def telea(rgb: np.ndarray, mask: np.ndarray, radius: int = 3) -> np.ndarray:
    """OpenCV inpainting (Telea) of the pixels where ``mask`` is set."""
    bgr = _u8(rgb)[..., ::-1].copy()
    out = cv2.inpaint(bgr, mask.astype(np.uint8) * 255, radius, cv2.INPAINT_TELEA)
    return out[..., ::-1].astype(np.float32) / 255.0


def unpaper_available() -> bool:
    return shutil.which("unpaper") is not None


def unpaper(gray: np.ndarray) -> np.ndarray:
    """Debian's ``unpaper`` with its default settings (PGM in, PGM out)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.pgm", Path(tmp) / "out.pgm"
        cv2.imwrite(str(src), _u8(gray))
        subprocess.run(["unpaper", "--overwrite", str(src), str(dst)], check=True, capture_output=True, timeout=300)
        out = cv2.imread(str(dst), cv2.IMREAD_GRAYSCALE)
    if out.shape != gray.shape:  # unpaper keeps the sheet size; guard anyway
        out = cv2.resize(out, (gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_AREA)
    return out.astype(np.float32) / 255.0


def tesseract_text(gray: np.ndarray) -> str:
    import pytesseract

    return pytesseract.image_to_string(_u8(gray), lang="eng", config="--psm 3")
