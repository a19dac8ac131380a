"""Photo denoising: Gaussian σ 0–50 and real-noise shapes, against NLM, TV and CBM3D told the true σ."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import baselines as B
from ..evalsets import condition_sigma, photo_condition
from ..metrics import psnr
from ..onnx_runner import OnnxImageModel
from .common import RESULTS, BaselineCache, Timed, fmt


# Bumped whenever this evaluation's inputs or figures change meaning: results of another version are not compared.
VERSION = 2
PHOTO_BAR_SIGMAS = (15, 25, 50)  # σ where CBM3D (given the true σ) is the bar


def _photo_conditions(quick: bool) -> list[str]:
    if quick:
        return ["σ=0", "σ=25"]
    return ["σ=0", "σ=5", "σ=15", "σ=25", "σ=50", "Poisson-Gaussian σ=25", "gray σ=25", "JPEG σ=15 q=75"]


def evaluate(model: OnnxImageModel, quick: bool) -> dict[str, Any]:
    """Gaussian σ 0–50 plus real-noise shapes; baselines are told the true σ and tuned per σ (oracles)."""
    timer = Timed()
    cache = BaselineCache(None if quick else RESULTS / "baselines-photo-denoise.json", VERSION)
    table: dict[str, dict[str, Any]] = {}
    ours_key = "photo-denoise (ours, blind)"
    for cond in _photo_conditions(quick):
        data = photo_condition(cond)
        if quick:
            data = dict(list(data.items())[:2])
        sigma = condition_sigma(cond)
        res: dict[str, list[float]] = {}
        for name, (clean, noisy) in data.items():
            res.setdefault("noisy input", []).append(psnr(noisy, clean))
            res.setdefault(ours_key, []).append(psnr(timer(ours_key, lambda: model(noisy), clean.shape[0] * clean.shape[1]), clean))
            if sigma == 0:
                continue  # nothing for a baseline to do
            cands: dict[str, Callable[[], np.ndarray]] = {}
            for f in (0.6, 0.8, 1.0):
                cands[f"NLM h={f}σ"] = lambda f=f: B.nlm_rgb(noisy, f * sigma)
            for f in (0.5, 1.0, 2.0):
                cands[f"TV w={f}σ"] = lambda f=f: B.tv_rgb(noisy, f * sigma)
            if sigma in PHOTO_BAR_SIGMAS and cond.startswith("σ=") and not quick:
                cands["CBM3D (true σ)"] = lambda: B.bm3d_rgb(noisy, sigma)
            for k, fn in cands.items():
                res.setdefault(k, []).append(cache.psnr(f"{cond}|{name}|{k}", lambda fn=fn: psnr(fn(), clean)))
        row: dict[str, Any] = {}
        for family, label in (("NLM", "NLM (best h, true σ)"), ("TV", "TV (best weight, true σ)")):
            keys = [k for k in res if k.startswith(family + " ")]
            if keys:
                best = max(keys, key=lambda k: np.mean(res[k]))
                row[label] = float(np.mean(res[best]))
                row[f"{family} best"] = best
        row.update({k: float(np.mean(v)) for k, v in res.items() if not k.startswith(("NLM ", "TV "))})
        table[cond] = row
    cache.save()
    bars = []
    for cond, row in table.items():
        ours = row[ours_key]
        if condition_sigma(cond) == 0:
            bars.append({"bar": "a clean photo comes back ≥ 40 dB against itself", "ours": ours, "ref": 40.0,
                         "met": ours >= 40.0})
            continue
        for label in ("NLM (best h, true σ)", "TV (best weight, true σ)"):
            if label in row:
                bars.append({"bar": f"PSNR above {label.split(' ')[0]} at {cond}", "ours": ours, "ref": row[label],
                             "met": ours > row[label]})
        if "CBM3D (true σ)" in row:
            bars.append({"bar": f"PSNR at least CBM3D's at {cond}", "ours": ours, "ref": row["CBM3D (true σ)"],
                         "met": ours >= row["CBM3D (true σ)"]})
    # One figure for comparing two versions: mean PSNR over the conditions, a clean photo counted up to 50 dB.
    score = float(np.mean([min(50.0, r[ours_key]) for r in table.values()]))
    summary = {f"psnr_db_{c.replace(' ', '_').replace('=', '')}": round(r[ours_key], 2) for c, r in table.items()}
    return {"table": table, "bars": bars, "s_per_mp": timer.s_per_mp(), "score": score,
            "summary": {**summary, "score_db": round(score, 3)}}


def markdown(d: dict[str, Any]) -> list[str]:
    out: list[str] = []
    cols = ["noisy input", "NLM (best h, true σ)", "TV (best weight, true σ)", "CBM3D (true σ)",
            "photo-denoise (ours, blind)"]
    out += ["## photo-denoise (6 eval photos, PSNR dB; baselines told the true σ, best of 3 strengths)", "",
            "| noise | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for cond, r in d["table"].items():
        out.append(f"| {cond} | " + " | ".join(fmt(r.get(c, "–")) for c in cols) + " |")
    out += ["", "s/MP: " + ", ".join(f"{k} {v}" for k, v in d["s_per_mp"].items()), ""]
    return out
