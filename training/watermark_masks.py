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
from .config import CONFIG_DIR, LEG_CONFIGS, TrainConfig
from .evalsets import unmarked_images, watermarked_photos
from .legs import MODELS_DIR
from .metrics import psnr
from .nets.unet import MAX_OPACITY
from .onnx_runner import OnnxImageModel
from .quality.common import RESULTS
from .quality.watermark import changed_mask, iou
from .warm_start import load_promoted, onnx_weights

OPACITY_THRESHOLDS = (0.05, 0.15, 0.30)  # 0.05: the head's own pass-through threshold (watermark-v3's config)

Mask = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (input, the head's output) -> pixels to inpaint


def opacity_of(onnx_path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The head's predicted opacity per pixel (the ONNX graph returns only the restored image)."""
    net = build_net(TrainConfig.load(CONFIG_DIR / f"{LEG_CONFIGS['watermark']}.json"))
    load_promoted(net, onnx_weights(onnx_path))
    net.eval()
    m = net.multiple_of

    def opacity(img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        x = np.pad(img, ((0, (-h) % m), (0, (-w) % m), (0, 0)), mode="reflect")
        with torch.no_grad():
            _, logit = net.predict_opacity(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].float())
        return (torch.sigmoid(logit) * MAX_OPACITY)[0, 0, :h, :w].numpy()

    return opacity


def masks(opacity: Callable[[np.ndarray], np.ndarray]) -> dict[str, Mask]:
    out: dict[str, Mask] = {"pixels the head changed by more than 2/255": changed_mask,
                            "the same, dilated by 1 px": lambda x, y: cv2.dilate(
                                changed_mask(x, y).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0}
    for t in OPACITY_THRESHOLDS:
        out[f"the head's predicted opacity > {t:g}"] = lambda x, y, t=t: opacity(x) > t
    return out


def measure(onnx_path: Path, quick: bool = False) -> dict[str, Any]:
    model = OnnxImageModel(onnx_path, 16)
    by_mask = masks(opacity_of(onnx_path))
    marked = watermarked_photos()
    unmarked = unmarked_images()
    if quick:
        marked, unmarked = dict(list(marked.items())[:2]), dict(list(unmarked.items())[:2])
    rows: dict[str, dict[str, list[float]]] = {k: {"iou": [], "marked_psnr": [], "unmarked_psnr": []}
                                               for k in ["the true mark", *by_mask, "the head's own inversion"]}
    for clean, img, true_mask in marked.values():
        out = model(img)
        given = {"the true mark": true_mask, **{k: f(img, out) for k, f in by_mask.items()}}
        for k, mask in given.items():
            rows[k]["iou"].append(iou(mask, true_mask))
            rows[k]["marked_psnr"].append(psnr(B.telea(img, mask), clean))
        rows["the head's own inversion"]["iou"].append(iou(changed_mask(img, out), true_mask))
        rows["the head's own inversion"]["marked_psnr"].append(psnr(out, clean))
    for img in unmarked.values():
        out = model(img)
        for k, f in by_mask.items():
            rows[k]["unmarked_psnr"].append(psnr(B.telea(img, f(img, out)), img))
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
