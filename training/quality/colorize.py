"""Colorization: BT.601 luma of the evaluation photos in, against the gray input and the originals.

Besides PSNR/SSIM/colourfulness, two colour measures against the original (Lab ab, both smoothed by a Gaussian of
σ = 2 px first, so JPEG chroma noise and single pixels do not count):

* **off-hue area** (the "large implausible-hue regions" of issue 9): a pixel is *off-hue* when the output gives it
  a visible colour (chroma C*ab ≥ 15) whose hue is more than 45° from the original's, or the original there is
  neutral (C*ab < 5); the measure is the share of the image covered by 8-connected off-hue regions of at least 1 %
  of the image (a lime-green cat face, a purple sky, a green blotch on a table); the part of it where the original
  is neutral (colour where there is none, rather than a wrong hue) is reported beside it. Against the truth it also
  counts colours that are wrong but plausible (a red car painted blue): an upper bound of implausibility, and 0 for the
  original and for the gray input (which the colourfulness bar rules out).
* **colour recall**: of the pixels the original shows clearly coloured (C*ab ≥ 15), the share the output colours
  right: hue within 45° and at least half the chroma. Gray → 0 %, sepia → only the browns, the original → 100 %.

``score`` (the promotion gate's single figure) = mean colour recall − mean off-hue area, in percent: it rises only
when more of the photo gets its right colour without wrong colour elsewhere. PSNR, the old score, rewards the
regression's hedge towards gray/sepia that this model moves away from (Zhang et al. 2016: class-rebalanced
colorization loses PSNR while gaining colour); PSNR and SSIM stay bars.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from ..evalsets import eval_photos, luma601
from ..metrics import colourfulness, psnr, ssim
from ..onnx_runner import OnnxImageModel
from .common import Timed, fmt

# Bumped whenever this evaluation's inputs or figures change meaning: results of another version are not compared.
VERSION = 2
SCORE_LABEL = "score: colour recall − off-hue (%)"  # the legs plot's axis (the others are in dB)

SMOOTH_SIGMA = 2.0  # px, Gaussian on ab before any hue comparison
VISIBLE_CHROMA = 15.0  # C*ab from which a pixel reads as coloured (output, for off-hue; original, for recall)
NEUTRAL_CHROMA = 5.0  # C*ab below which the original is neutral: any visible colour there is off-hue
HUE_TOLERANCE = 45.0  # degrees: an eighth of the hue circle (sky blue -> purple is ~55°)
MIN_REGION = 0.01  # an off-hue region counts as large from this share of the image
RECALL_MIN_CHROMA_RATIO = 0.5
# Bars (issue 9, item 7).
PSNR_MARGIN_DB = 1.0
COLOURFULNESS_SHARE = 0.6
MAX_OFF_HUE_PCT = 2.0  # mean share of the image in large off-hue regions, percent


def _ab(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    ab = rgb2lab(np.clip(rgb, 0.0, 1.0).astype(np.float64))[..., 1:].astype(np.float32)
    return cv2.GaussianBlur(ab, (0, 0), SMOOTH_SIGMA)


def _hue_chroma(out: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hue difference in degrees, output chroma, original chroma), per pixel."""
    ab_o, ab_r = _ab(out), _ab(ref)
    c_o, c_r = np.hypot(ab_o[..., 0], ab_o[..., 1]), np.hypot(ab_r[..., 0], ab_r[..., 1])
    cos = (ab_o * ab_r).sum(-1) / np.maximum(c_o * c_r, 1e-6)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))), c_o, c_r


def off_hue_regions(out: np.ndarray, ref: np.ndarray, min_region: float = MIN_REGION) -> dict[str, float]:
    """Percent of the image in large (≥ ``min_region``) 8-connected off-hue regions, the largest region's share, and
    the part of the large regions where the original is neutral (colour where there is none, against a wrong hue)."""
    dh, c_o, c_r = _hue_chroma(out, ref)
    neutral = c_r < NEUTRAL_CHROMA
    mask = (c_o >= VISIBLE_CHROMA) & (neutral | (dh > HUE_TOLERANCE))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    areas = stats[1:n, cv2.CC_STAT_AREA].astype(np.float64) / mask.size
    large = np.concatenate([[False], areas >= min_region])[labels]
    return {"off_hue_pct": 100.0 * float(areas[areas >= min_region].sum()),
            "largest_pct": 100.0 * float(areas.max(initial=0.0)),
            "on_neutral_pct": 100.0 * float((large & neutral).mean())}


def colour_recall(out: np.ndarray, ref: np.ndarray) -> float:
    """Percent of the original's clearly coloured pixels that the output colours in the right hue and chroma."""
    dh, c_o, c_r = _hue_chroma(out, ref)
    coloured = c_r >= VISIBLE_CHROMA
    right = coloured & (dh <= HUE_TOLERANCE) & (c_o >= RECALL_MIN_CHROMA_RATIO * c_r)
    return 100.0 * float(right.sum()) / max(1, int(coloured.sum()))


def evaluate(model: OnnxImageModel, quick: bool) -> dict[str, Any]:
    photos = eval_photos()
    if quick:
        photos = dict(list(photos.items())[:2])
    timer = Timed()
    res: dict[str, dict[str, list[float]]] = {}
    per_photo: dict[str, dict[str, float]] = {}
    for name, rgb in photos.items():
        gray = luma601(rgb)
        for k, fn in {"grayscale input": lambda: np.repeat(gray[..., None], 3, 2),
                      "colorize (ours)": lambda: model(gray),
                      "original": lambda: rgb}.items():
            out = timer(k, fn, gray.size)
            r = res.setdefault(k, {})
            regions = off_hue_regions(out, rgb)
            figures = {"psnr": psnr(out, rgb) if k != "original" else None,
                       "ssim": ssim(out, rgb) if k != "original" else None,
                       "colourfulness": colourfulness(out), "colour_recall": colour_recall(out, rgb),
                       "off_hue_pct": regions["off_hue_pct"], "off_hue_on_neutral_pct": regions["on_neutral_pct"]}
            for m, v in figures.items():
                if v is not None:
                    r.setdefault(m, []).append(v)
            if k == "colorize (ours)":
                per_photo[name] = {"psnr": round(figures["psnr"], 2), "ssim": round(figures["ssim"], 4),
                                   "colourfulness": round(figures["colourfulness"], 2),
                                   "colour_recall": round(figures["colour_recall"], 1),
                                   "off_hue_pct": round(regions["off_hue_pct"], 2),
                                   "off_hue_on_neutral_pct": round(regions["on_neutral_pct"], 2),
                                   "largest_off_hue_pct": round(regions["largest_pct"], 2)}
    rows = {k: {m: float(np.mean(v)) for m, v in r.items()} for k, r in res.items()}
    ours, gray_row = rows["colorize (ours)"], rows["grayscale input"]
    vivid = COLOURFULNESS_SHARE * rows["original"]["colourfulness"]
    bars = [{"bar": f"PSNR ≥ grayscale input + {PSNR_MARGIN_DB:g} dB", "ours": ours["psnr"],
             "ref": gray_row["psnr"] + PSNR_MARGIN_DB, "met": ours["psnr"] >= gray_row["psnr"] + PSNR_MARGIN_DB},
            {"bar": "SSIM ≥ grayscale input's", "ours": ours["ssim"], "ref": gray_row["ssim"],
             "met": ours["ssim"] >= gray_row["ssim"]},
            {"bar": f"colourfulness ≥ {COLOURFULNESS_SHARE:.0%} of the originals'", "ours": ours["colourfulness"],
             "ref": vivid, "met": ours["colourfulness"] >= vivid},
            {"bar": f"large off-hue regions ≤ {MAX_OFF_HUE_PCT:g} % of the image (mean)", "ours": ours["off_hue_pct"],
             "ref": MAX_OFF_HUE_PCT, "met": ours["off_hue_pct"] <= MAX_OFF_HUE_PCT}]
    score = ours["colour_recall"] - ours["off_hue_pct"]
    return {"rows": rows, "per_photo": per_photo, "s_per_mp": timer.s_per_mp(), "score": score, "bars": bars,
            "summary": {"psnr_db": round(ours["psnr"], 2), "ssim": round(ours["ssim"], 4),
                        "colourfulness": round(ours["colourfulness"], 2),
                        "colour_recall_pct": round(ours["colour_recall"], 1),
                        "off_hue_pct": round(ours["off_hue_pct"], 2),
                        "off_hue_on_neutral_pct": round(ours["off_hue_on_neutral_pct"], 2), "score": round(score, 2)}}


def markdown(d: dict[str, Any]) -> list[str]:
    out: list[str] = []
    out += ["## colorize (6 eval photos, BT.601 luma in)", "",
            "Colour recall: share of the original's clearly coloured pixels (C*ab ≥ 15) given the right hue (± 45°) "
            "and ≥ half the chroma. Off-hue: share of the image in connected regions (≥ 1 % of it) coloured visibly "
            "(C*ab ≥ 15) in a hue > 45° from the original's, or where the original is neutral. Score (promotion "
            f"gate) = recall − off-hue: {fmt(d['score'])}.", "",
            "| output | PSNR dB | SSIM | colourfulness | colour recall % | off-hue area % | s/MP |",
            "|---|---|---|---|---|---|---|"]
    for k, r in d["rows"].items():
        out.append(f"| {k} | {fmt(r.get('psnr', '–'))} | {fmt(r.get('ssim', '–'))} | {fmt(r['colourfulness'])} | "
                   f"{fmt(r.get('colour_recall', '–'))} | {fmt(r.get('off_hue_pct', '–'))} | "
                   f"{fmt(d['s_per_mp'].get(k, '')) if k == 'colorize (ours)' else ''} |")
    if d.get("per_photo"):
        out += ["", "| photo (ours) | PSNR dB | SSIM | colourfulness | colour recall % | off-hue area % | "
                    "of it where the original is neutral % | largest off-hue region % |",
                "|---|---|---|---|---|---|---|---|"]
        for name, p in d["per_photo"].items():
            out.append(f"| {name} | {fmt(p['psnr'])} | {fmt(p['ssim'])} | {fmt(p['colourfulness'])} | "
                       f"{fmt(p['colour_recall'])} | {fmt(p['off_hue_pct'])} | "
                       f"{fmt(p.get('off_hue_on_neutral_pct', '–'))} | {fmt(p['largest_off_hue_pct'])} |")
    out.append("")
    return out
