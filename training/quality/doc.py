"""Document cleanup: synthetic pages rendered with the evaluation fonts, against thresholding, NLM and unpaper;
and "clean in" pages, which need no cleaning and must come back untouched (do no harm)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import baselines as B
from ..evalsets import clean_in_pages, eval_pages
from ..metrics import cer, psnr, rmse
from ..onnx_runner import OnnxImageModel
from .common import Timed, fmt


# Bumped whenever this evaluation's inputs or figures change meaning: results of another version are not compared.
# 2: the "clean in" set and its bars, the dirty bars RMSE ≤ 0.03 and CER within 1 point, score over both sets.
VERSION = 2

# Bars (issue 9, item 5). Ink = pixels darker than mid-grey 128 (8-bit) in the input.
MID_GREY = 128
MAX_LIGHTENED_PCT = 1.0  # of the input's ink pixels that come out at 128 or lighter
MAX_INK_SHIFT = 10.0  # grey levels between the ink's mean in and out
MAX_OCR_CHANGE_PCT = 1.0  # edit distance of tesseract's text of the output against its text of the input
MAX_DIRTY_RMSE = 0.03
CER_POINTS = 1.0  # dirty pages' CER at most this many points above the clean pages'
CLEAN_PSNR_CAP = 40.0  # dB: a clean page counts up to this in the score (identical = 40)


def _u8(img: np.ndarray) -> np.ndarray:
    # The service writes 8-bit outputs: ink is judged on what a user gets.
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.int32)


def ink_lightened_pct(inp: np.ndarray, out: np.ndarray) -> float:
    """Percent of the input's ink pixels (< 128) that are no longer ink in the output (≥ 128); 0 without ink."""
    ink = _u8(inp) < MID_GREY
    return 100.0 * float((_u8(out)[ink] >= MID_GREY).mean()) if ink.any() else 0.0


def ink_mean_shift(inp: np.ndarray, out: np.ndarray) -> float:
    """Mean grey level of the input's ink pixels in the output minus in the input (> 0: the ink got lighter)."""
    ink = _u8(inp) < MID_GREY
    return float(_u8(out)[ink].mean() - _u8(inp)[ink].mean()) if ink.any() else 0.0


def text_change_pct(text_in: str, text_out: str) -> float:
    """How much of tesseract's reading of the input changed in the output: CER with the input's text as reference."""
    return cer(text_in, text_out)


def evaluate_clean_in(model: Callable[[np.ndarray], np.ndarray], quick: bool, ocr: bool = True) -> dict[str, Any]:
    """Pages that need no cleaning: per page the ink kept, the PSNR against the input and the OCR text kept."""
    rows: dict[str, dict[str, Any]] = {}
    for page in clean_in_pages(quick):
        out = model(page.image)
        ink = _u8(page.image) < MID_GREY
        row: dict[str, Any] = {"kind": page.kind, "ink_pct": 100.0 * float(ink.mean()),
                               "lightened_pct": ink_lightened_pct(page.image, out),
                               "ink_mean_in": float(_u8(page.image)[ink].mean()) if ink.any() else 255.0,
                               "ink_shift": ink_mean_shift(page.image, out), "psnr": psnr(out, page.image)}
        if ocr:
            text_in = B.tesseract_text(page.image)
            row["input_cer"] = cer(page.text, text_in)  # is the input legible at all (else "change" means little)
            row["ocr_change_pct"] = text_change_pct(text_in, B.tesseract_text(out))
        rows[page.name] = row
    worst = {"lightened_pct": max(r["lightened_pct"] for r in rows.values()),
             "ink_shift": max((r["ink_shift"] for r in rows.values()), key=abs),
             "psnr": min(r["psnr"] for r in rows.values())}
    if ocr:
        worst["ocr_change_pct"] = max(r["ocr_change_pct"] for r in rows.values())
    bars = [{"bar": f"clean in: ink stays ink (≤ {MAX_LIGHTENED_PCT:g} % of ink pixels turn ≥ {MID_GREY}, worst page)",
             "ours": worst["lightened_pct"], "ref": MAX_LIGHTENED_PCT,
             "met": worst["lightened_pct"] <= MAX_LIGHTENED_PCT},
            {"bar": f"clean in: ink mean within {MAX_INK_SHIFT:g} grey levels of the input's (worst page)",
             "ours": worst["ink_shift"], "ref": MAX_INK_SHIFT, "met": abs(worst["ink_shift"]) <= MAX_INK_SHIFT}]
    if ocr:
        bars.append({"bar": f"clean in: tesseract text unchanged (≤ {MAX_OCR_CHANGE_PCT:g} % change, worst page)",
                     "ours": worst["ocr_change_pct"], "ref": MAX_OCR_CHANGE_PCT,
                     "met": worst["ocr_change_pct"] <= MAX_OCR_CHANGE_PCT})
    capped = float(np.mean([min(CLEAN_PSNR_CAP, r["psnr"]) for r in rows.values()]))
    return {"rows": rows, "worst": worst, "bars": bars, "capped_psnr": capped}


def evaluate(model: OnnxImageModel, quick: bool) -> dict[str, Any]:
    pages = eval_pages(2 if quick else 4)
    timer = Timed()
    methods: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "noisy input": lambda x: x,
        "Otsu": B.otsu,
        "Sauvola": B.sauvola,
    }
    # NLM has no notion of the noise level here; give it the best h of a small grid (an oracle choice).
    for h in (10, 20, 30):
        methods[f"NLM h={h}"] = lambda x, h=h: B.nlm_gray(x, h)
    if B.unpaper_available():
        methods["unpaper (defaults)"] = B.unpaper
    methods["doc-denoise (ours)"] = model
    outputs: dict[str, list[np.ndarray]] = {k: [] for k in methods}
    for p in pages:
        for k, fn in methods.items():
            outputs[k].append(timer(k, lambda fn=fn: fn(p.dirty), p.dirty.size))
    rows: dict[str, dict[str, float]] = {}
    for k, outs in outputs.items():
        rows[k] = {"rmse": float(np.mean([rmse(o, p.clean) for o, p in zip(outs, pages)])),
                   "psnr": float(np.mean([psnr(o, p.clean) for o, p in zip(outs, pages)]))}
    nlm = min((k for k in rows if k.startswith("NLM")), key=lambda k: rows[k]["rmse"])
    for k in [k for k in rows if k.startswith("NLM") and k != nlm]:
        rows.pop(k)
    ocr_ok = True
    try:
        B.tesseract_text(pages[0].clean[:64, :64])
    except Exception:  # tesseract binary missing
        ocr_ok = False
    if ocr_ok:
        for k in ["clean page", *rows]:
            outs = [p.clean for p in pages] if k == "clean page" else outputs[k]
            rows.setdefault(k, {})["cer"] = float(np.mean([cer(p.text, B.tesseract_text(o))
                                                           for o, p in zip(outs, pages)]))
    speed = timer.s_per_mp()
    for k in rows:
        if k in speed:
            rows[k]["s_per_mp"] = speed[k]
    ours = rows["doc-denoise (ours)"]
    bars = []
    for k in ["noisy input", "Otsu", "Sauvola", nlm, "unpaper (defaults)"]:
        if k in rows:
            bars.append({"bar": f"RMSE below {k}", "ours": ours["rmse"], "ref": rows[k]["rmse"],
                         "met": ours["rmse"] < rows[k]["rmse"]})
            bars.append({"bar": f"PSNR above {k}", "ours": ours["psnr"], "ref": rows[k]["psnr"],
                         "met": ours["psnr"] > rows[k]["psnr"]})
    bars.append({"bar": f"RMSE ≤ {MAX_DIRTY_RMSE:g} on the dirty pages", "ours": ours["rmse"], "ref": MAX_DIRTY_RMSE,
                 "met": ours["rmse"] <= MAX_DIRTY_RMSE})
    if ocr_ok:
        bars.append({"bar": f"tesseract CER within {CER_POINTS:g} point of the clean pages'", "ours": ours["cer"],
                     "ref": rows["clean page"]["cer"], "met": ours["cer"] <= rows["clean page"]["cer"] + CER_POINTS})
    clean_in = evaluate_clean_in(model, quick, ocr_ok)
    bars += clean_in["bars"]
    # One figure for the gate: the dirty pages' PSNR and the clean-in pages' PSNR against their input (each page
    # counted up to 40 dB), averaged. Dirty PSNR alone would reject a leg that stops the harm at no dirty gain,
    # and, while the clean-in bars are still missed, let one that harms clean pages more through.
    score = 0.5 * (float(ours["psnr"]) + clean_in["capped_psnr"])
    w = clean_in["worst"]
    return {"pages": len(pages), "rows": rows, "bars": bars, "score": score, "clean_in": clean_in["rows"],
            "summary": {"rmse": round(ours["rmse"], 4), "psnr_db": round(ours["psnr"], 2),
                        "cer_pct": round(ours.get("cer", float("nan")), 2),
                        "clean_cer_pct": round(rows.get("clean page", {}).get("cer", float("nan")), 2),
                        "clean_in_psnr_db": round(clean_in["capped_psnr"], 2),
                        "clean_in_worst_lightened_pct": round(w["lightened_pct"], 3),
                        "clean_in_worst_ink_shift": round(w["ink_shift"], 1),
                        "clean_in_worst_ocr_change_pct": round(w.get("ocr_change_pct", float("nan")), 2)}}


def markdown(d: dict[str, Any]) -> list[str]:
    out: list[str] = []
    out += [f"## doc-denoise ({d['pages']} synthetic pages, evaluation fonts)", "",
            "| method | RMSE ↓ | PSNR dB ↑ | tesseract CER % | s/MP |", "|---|---|---|---|---|"]
    for k, r in d["rows"].items():
        out.append(f"| {k} | {fmt(r.get('rmse', ''))} | {fmt(r.get('psnr', ''))} | {fmt(r.get('cer', ''))} | "
                   f"{fmt(r.get('s_per_mp', ''))} |")
    out.append("")
    if "clean_in" in d:
        out += ["### doc-denoise, clean in: pages that need no cleaning must come back untouched", "",
                "Already-clean, already-binary, typed (FreeMono, ink bleed), bold, large-heading and colour (luma) "
                "pages, evaluation fonts. Ink = input pixels darker than 128 (8-bit); *lightened*: ink pixels the "
                "model returns at 128 or lighter (bar ≤ 1 %); *ink shift*: mean grey level of that ink, output − "
                "input (bar ±10); *OCR change*: tesseract's text of the output against its text of the input, CER "
                "(bar ≤ 1 %). The score is the mean of the dirty pages' PSNR and these pages' PSNR against their "
                "input (each counted up to 40 dB). *Input CER*: tesseract on the input against the drawn text, to "
                "show the input is legible.", "",
                "| page | ink % | lightened % ↓ | ink mean in → out | PSNR vs input dB ↑ | OCR change % ↓ | input CER % |",
                "|---|---|---|---|---|---|---|"]
        for k, r in d["clean_in"].items():
            out.append(f"| {k} | {r['ink_pct']:.1f} | {r['lightened_pct']:.2f} | {r['ink_mean_in']:.1f} → "
                       f"{r['ink_mean_in'] + r['ink_shift']:.1f} | {r['psnr']:.2f} | "
                       f"{fmt(r.get('ocr_change_pct', ''))} | {fmt(r.get('input_cer', ''))} |")
        out.append("")
    return out
