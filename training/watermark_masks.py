"""Would inpainting under the watermark head's own mask beat the head's inversion? ``python -m training.watermark_masks``

The watermark head removes a mark by inverting the alpha blend with the opacity and colour it predicts. The other
way to remove it is to take a mask from the same head (the pixels it changes, or its predicted opacity above a
threshold), then repaint those pixels by Telea inpainting, as the eval's reference does with the true mask. This
script measures that second way on the eval's marked photos (PSNR against the clean photo) and unmarked images
(PSNR against the input, which should come back unchanged), next to the shipped inversion. It trains nothing and
chooses nothing: the masks are the eval's own rule (changed by more than 2/255) and three fixed opacity thresholds.
Writes ``results/watermark-masks.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import torch

from . import baselines as B
from .builders import build_net
from .config import TrainConfig
from .evaluate import ROOT
from .evalsets import unmarked_images, watermarked_photos
from .legs import MODELS_DIR
from .metrics import psnr
from .nets.unet import MAX_OPACITY
from .onnx_runner import OnnxImageModel, pad_to_multiple
from .promote import manifest_entry
from .quality.common import RESULTS
from .quality.watermark import changed_mask, iou
from .warm_start import load_promoted, onnx_weights

OPACITY_THRESHOLDS = (0.05, 0.15, 0.30)  # 0.05: the head's own pass-through threshold (watermark-v3's config)


def opacity_of(onnx_path: Path, config: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The head's predicted opacity per pixel (the ONNX graph returns only the restored image); ``config``: the
    training config the ONNX file was exported from."""
    net = build_net(TrainConfig.load(config))
    load_promoted(net, onnx_weights(onnx_path))
    net.eval()

    def opacity(img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        x = pad_to_multiple(img, net.multiple_of)
        with torch.no_grad():
            _, logit = net.predict_opacity(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].float())
        return (torch.sigmoid(logit) * MAX_OPACITY)[0, 0, :h, :w].numpy()

    return opacity


MASK_NAMES = ["pixels the head changed by more than 2/255", "the same, dilated by 1 px",
              *(f"the head's predicted opacity > {t:g}" for t in OPACITY_THRESHOLDS)]


def head_masks(changed: np.ndarray, opacity: np.ndarray) -> dict[str, np.ndarray]:
    """The masks to inpaint under (``MASK_NAMES``), from the pixels the head changed and its predicted opacity."""
    dilated = cv2.dilate(changed.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    return dict(zip(MASK_NAMES, [changed, dilated, *(opacity > t for t in OPACITY_THRESHOLDS)]))


def measure(onnx_path: Path, quick: bool = False) -> dict[str, Any]:
    # The model's own manifest entry says which config made it and how its input must be padded (not the config
    # the next watermark leg trains, which may be another net).
    entry = manifest_entry(onnx_path.parent, "watermark")
    model = OnnxImageModel(onnx_path, entry["tiling"]["multiple_of"])
    opacity = opacity_of(onnx_path, ROOT / entry["training"]["config"])
    marked = watermarked_photos()
    unmarked = unmarked_images()
    if quick:
        marked, unmarked = dict(list(marked.items())[:2]), dict(list(unmarked.items())[:2])
    rows: dict[str, dict[str, list[float]]] = {k: {"iou": [], "marked_psnr": [], "unmarked_psnr": []}
                                               for k in ["the true mark", *MASK_NAMES, "the head's own inversion"]}
    for clean, img, true_mask in marked.values():
        out = model(img)
        changed = changed_mask(img, out)
        for k, mask in {"the true mark": true_mask, **head_masks(changed, opacity(img))}.items():
            rows[k]["iou"].append(iou(mask, true_mask))
            rows[k]["marked_psnr"].append(psnr(B.telea(img, mask), clean))
        rows["the head's own inversion"]["iou"].append(iou(changed, true_mask))
        rows["the head's own inversion"]["marked_psnr"].append(psnr(out, clean))
    for img in unmarked.values():
        out = model(img)
        for k, mask in head_masks(changed_mask(img, out), opacity(img)).items():
            rows[k]["unmarked_psnr"].append(psnr(B.telea(img, mask), img))
        rows["the head's own inversion"]["unmarked_psnr"].append(psnr(out, img))
    return {k: {"iou": float(np.mean(r["iou"])), "marked_psnr": float(np.mean(r["marked_psnr"])),
                "unmarked_worst_psnr": min(r["unmarked_psnr"]) if r["unmarked_psnr"] else None}
            for k, r in rows.items()}


def markdown(rows: dict[str, Any]) -> str:
    lines = ["# Watermark: Telea inpainting under the head's own mask, against the head's inversion", "",
             "Eval marked photos (PSNR against the clean photo) and unmarked images (worst PSNR against the input); "
             "`python -m training.watermark_masks`.", "",
             "| mask given to Telea (radius 3) | IoU with the true mark | marked photos, PSNR dB | "
             "unmarked images, worst PSNR dB |", "|---|---|---|---|"]
    for k, r in rows.items():
        worst = "–" if r["unmarked_worst_psnr"] is None else f"{r['unmarked_worst_psnr']:.2f}"
        lines.append(f"| {k} | {r['iou']:.3f} | {r['marked_psnr']:.2f} | {worst} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.watermark_masks", description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=MODELS_DIR / "watermark.onnx")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    rows = measure(args.model)
    (args.out / "watermark-masks.json").write_text(json.dumps(rows, indent=1) + "\n")
    (args.out / "watermark-masks.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
