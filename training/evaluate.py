"""``python -m training.evaluate [NAME ...] [--models-dir services/models] [--quick]``

Evaluates the exported ONNX models (the files the service ships, read through ``manifest.json``) on the
held-out sets against classical baselines and writes ``training/results/quality.md`` and ``quality.json``.
Seconds per megapixel are wall times on this machine (onnxruntime, 2 threads; baselines single call).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import baselines as B
from .evalsets import eval_pages, luma601, noisy_photos, watermarked_photos, eval_photos
from .metrics import cer, colourfulness, psnr, rmse, ssim
from .onnx_runner import OnnxImageModel

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ROOT / "services" / "models"
RESULTS = Path(__file__).resolve().parent / "results"
NAMES = ("doc-denoise", "photo-denoise", "watermark", "colorize")


class Timed:
    """Runs a method over images, accumulating output, seconds and megapixels."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.mpix: dict[str, float] = {}

    def __call__(self, label: str, fn: Callable[[], np.ndarray], pixels: int) -> np.ndarray:
        t = time.perf_counter()
        out = fn()
        self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - t
        self.mpix[label] = self.mpix.get(label, 0.0) + pixels / 1e6
        return out

    def s_per_mp(self) -> dict[str, float]:
        return {k: round(self.seconds[k] / self.mpix[k], 3) for k in self.seconds}


def _mean(rows: list[dict[str, float]], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def evaluate_doc(model: OnnxImageModel, quick: bool) -> dict[str, Any]:
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
    if ocr_ok:
        bars.append({"bar": "tesseract CER within 2 points of the clean pages'", "ours": ours["cer"],
                     "ref": rows["clean page"]["cer"], "met": ours["cer"] <= rows["clean page"]["cer"] + 2})
    return {"pages": len(pages), "rows": rows, "bars": bars,
            "summary": {"rmse": round(ours["rmse"], 4), "psnr_db": round(ours["psnr"], 2),
                        "cer_pct": round(ours.get("cer", float("nan")), 2),
                        "clean_cer_pct": round(rows.get("clean page", {}).get("cer", float("nan")), 2)}}


def evaluate_photo(model: OnnxImageModel, quick: bool) -> dict[str, Any]:
    sigmas = (25,) if quick else (15, 25, 50)
    bm3d_sigmas = () if quick else (25,)
    timer = Timed()
    table: dict[str, dict[str, float]] = {}
    for sigma in sigmas:
        data = noisy_photos(sigma)
        if quick:
            data = dict(list(data.items())[:2])
        res: dict[str, list[float]] = {}
        for name, (clean, noisy) in data.items():
            cands = {"noisy input": lambda: noisy,
                     "photo-denoise (ours, blind)": lambda: model(noisy)}
            # NLM is given the true σ and the best of three strengths per σ (oracle-tuned baseline).
            for f in (0.6, 0.8, 1.0):
                cands[f"NLM h={f}σ"] = lambda f=f: B.nlm_rgb(noisy, f * sigma)
            if sigma in bm3d_sigmas:
                cands["CBM3D (true σ)"] = lambda: B.bm3d_rgb(noisy, sigma)
            for k, fn in cands.items():
                out = timer(k, fn, clean.shape[0] * clean.shape[1])
                res.setdefault(k, []).append(psnr(out, clean))
        nlm = max((k for k in res if k.startswith("NLM")), key=lambda k: np.mean(res[k]))
        table[f"σ={sigma}"] = {("NLM (best h, true σ)" if k == nlm else k): float(np.mean(v))
                               for k, v in res.items() if not k.startswith("NLM") or k == nlm}
        table[f"σ={sigma}"]["NLM best h"] = nlm
    ours_key = "photo-denoise (ours, blind)"
    bars = []
    for s, row in table.items():
        bars.append({"bar": f"PSNR above NLM at {s}", "ours": row[ours_key], "ref": row["NLM (best h, true σ)"],
                     "met": row[ours_key] > row["NLM (best h, true σ)"]})
        if "CBM3D (true σ)" in row:
            bars.append({"bar": f"PSNR at least CBM3D's at {s}", "ours": row[ours_key], "ref": row["CBM3D (true σ)"],
                         "met": row[ours_key] >= row["CBM3D (true σ)"]})
    speed = {k: v for k, v in timer.s_per_mp().items() if k != "noisy input"}
    return {"table": table, "bars": bars, "s_per_mp": speed,
            "summary": {f"psnr_db_sigma{s[2:]}": round(r[ours_key], 2) for s, r in table.items()}}


def evaluate_watermark(model: OnnxImageModel, quick: bool) -> dict[str, Any]:
    data = watermarked_photos()
    if quick:
        data = dict(list(data.items())[:2])
    timer = Timed()
    res: dict[str, list[float]] = {}
    for name, (clean, marked, mask) in data.items():
        n = clean.shape[0] * clean.shape[1]
        for k, fn in {"watermarked input": lambda: marked,
                      "Telea inpainting (true mask)": lambda: B.telea(marked, mask),
                      "watermark (ours, no mask)": lambda: model(marked)}.items():
            out = timer(k, fn, n)
            res.setdefault(k, []).append(psnr(out, clean))
            res.setdefault(k + " SSIM", []).append(ssim(out, clean))
    row = {k: float(np.mean(v)) for k, v in res.items()}
    ours, telea = row["watermark (ours, no mask)"], row["Telea inpainting (true mask)"]
    return {"row": row, "s_per_mp": timer.s_per_mp(),
            "bars": [{"bar": "PSNR ≥ Telea (true mask) + 2 dB", "ours": ours, "ref": telea + 2, "met": ours >= telea + 2}],
            "summary": {"psnr_db": round(ours, 2), "ssim": round(row["watermark (ours, no mask) SSIM"], 4)}}


def evaluate_colorize(model: OnnxImageModel, quick: bool) -> dict[str, Any]:
    photos = eval_photos()
    if quick:
        photos = dict(list(photos.items())[:2])
    timer = Timed()
    res: dict[str, dict[str, list[float]]] = {}
    for name, rgb in photos.items():
        gray = luma601(rgb)
        for k, fn in {"grayscale input": lambda: np.repeat(gray[..., None], 3, 2),
                      "colorize (ours)": lambda: model(gray),
                      "original": lambda: rgb}.items():
            out = timer(k, fn, gray.size)
            r = res.setdefault(k, {})
            r.setdefault("psnr", []).append(psnr(out, rgb))
            r.setdefault("ssim", []).append(ssim(out, rgb) if k != "original" else 1.0)
            r.setdefault("colourfulness", []).append(colourfulness(out))
    rows = {k: {m: float(np.mean(v)) for m, v in r.items() if not (k == "original" and m != "colourfulness")}
            for k, r in res.items()}
    ours, gray_row = rows["colorize (ours)"], rows["grayscale input"]
    half = 0.5 * rows["original"]["colourfulness"]
    return {"rows": rows, "s_per_mp": timer.s_per_mp(),
            "bars": [{"bar": "PSNR above the grayscale input's", "ours": ours["psnr"], "ref": gray_row["psnr"],
                      "met": ours["psnr"] > gray_row["psnr"]},
                     {"bar": "SSIM above the grayscale input's", "ours": ours["ssim"], "ref": gray_row["ssim"],
                      "met": ours["ssim"] > gray_row["ssim"]},
                     {"bar": "colourfulness ≥ half the originals'", "ours": ours["colourfulness"], "ref": half,
                      "met": ours["colourfulness"] >= half}],
            "summary": {"psnr_db": round(ours["psnr"], 2), "ssim": round(ours["ssim"], 4),
                        "colourfulness": round(ours["colourfulness"], 2)}}


EVALUATORS = {"doc-denoise": evaluate_doc, "photo-denoise": evaluate_photo,
              "watermark": evaluate_watermark, "colorize": evaluate_colorize}
CHANNELS_IN = {"doc-denoise": 1, "photo-denoise": 3, "watermark": 3, "colorize": 1}


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) and abs(v) < 1 else (f"{v:.2f}" if isinstance(v, float) else str(v))


def to_markdown(results: dict[str, Any]) -> str:
    out = ["# Quality of the shipped models on the held-out evaluation sets", "",
           "Generated by `python -m training.evaluate`; inputs never seen in training (see training/README.md).", ""]
    m = results["models"]
    if "doc-denoise" in m:
        d = m["doc-denoise"]
        out += [f"## doc-denoise ({d['pages']} synthetic pages, evaluation fonts)", "",
                "| method | RMSE ↓ | PSNR dB ↑ | tesseract CER % | s/MP |", "|---|---|---|---|---|"]
        for k, r in d["rows"].items():
            out.append(f"| {k} | {_fmt(r.get('rmse', ''))} | {_fmt(r.get('psnr', ''))} | {_fmt(r.get('cer', ''))} | "
                       f"{_fmt(r.get('s_per_mp', ''))} |")
        out.append("")
    if "photo-denoise" in m:
        d = m["photo-denoise"]
        cols = sorted({k for r in d["table"].values() for k in r if k != "NLM best h"})
        out += ["## photo-denoise (6 eval photos, Gaussian noise, PSNR dB)", "",
                "| σ | " + " | ".join(cols) + " | NLM best h |", "|---" * (len(cols) + 2) + "|"]
        for s, r in d["table"].items():
            out.append(f"| {s} | " + " | ".join(_fmt(r.get(c, "–")) for c in cols) + f" | {r['NLM best h']} |")
        out += ["", "s/MP: " + ", ".join(f"{k} {v}" for k, v in d["s_per_mp"].items()), ""]
    if "watermark" in m:
        d = m["watermark"]
        out += ["## watermark (6 eval photos, evaluation fonts)", "", "| method | PSNR dB | SSIM | s/MP |", "|---|---|---|---|"]
        for k in ("watermarked input", "Telea inpainting (true mask)", "watermark (ours, no mask)"):
            out.append(f"| {k} | {_fmt(d['row'][k])} | {_fmt(d['row'][k + ' SSIM'])} | {_fmt(d['s_per_mp'].get(k, ''))} |")
        out.append("")
    if "colorize" in m:
        d = m["colorize"]
        out += ["## colorize (6 eval photos, BT.601 luma in)", "", "| output | PSNR dB | SSIM | colourfulness | s/MP |",
                "|---|---|---|---|---|"]
        for k, r in d["rows"].items():
            out.append(f"| {k} | {_fmt(r.get('psnr', '–'))} | {_fmt(r.get('ssim', '–'))} | {_fmt(r['colourfulness'])} | "
                       f"{_fmt(d['s_per_mp'].get(k, '')) if k == 'colorize (ours)' else ''} |")
        out.append("")
    out += ["## Bars", "", "| model | bar | ours | reference | met |", "|---|---|---|---|---|"]
    for name, d in m.items():
        for b in d["bars"]:
            out.append(f"| {name} | {b['bar']} | {_fmt(b['ours'])} | {_fmt(b['ref'])} | {'yes' if b['met'] else '**no**'} |")
    out += ["", "## Speed (onnxruntime, 2 threads, this CPU, 1024×1024 input)", "", "| model | s/MP |", "|---|---|"]
    for name, d in m.items():
        out.append(f"| {name} | {d['onnx_s_per_mp']} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.evaluate")
    p.add_argument("names", nargs="*", default=list(NAMES))
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--quick", action="store_true", help="two images per set, no BM3D (smoke test)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", choices=["fp32", "int8"], default="fp32",
                   help="int8: evaluate each model's int8 variant (export.quantize) into quality-int8.md/.json")
    args = p.parse_args(argv)
    manifest = json.loads((args.models_dir / "manifest.json").read_text())
    specs = {m["name"]: m for m in manifest["models"]}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "quality" if args.precision == "fp32" else f"quality-{args.precision}"
    json_path = args.out / f"{stem}.json"
    results = json.loads(json_path.read_text()) if json_path.is_file() else {"models": {}}
    for name in args.names:
        spec = specs[name]
        variant = next((v for v in spec.get("variants", []) if v["precision"] == args.precision), None)
        if args.precision != "fp32" and variant is None:
            print(f"{name}: no {args.precision} variant, skipped", flush=True)
            continue
        path = args.models_dir / (variant["file"] if variant else spec["file"])
        model = OnnxImageModel(path, spec["tiling"]["multiple_of"], args.threads)
        t = time.perf_counter()
        res = EVALUATORS[name](model, args.quick)
        res["onnx_s_per_mp"] = round(model.seconds_per_megapixel(CHANNELS_IN[name]), 3)
        res["summary"]["onnx_s_per_mp"] = res["onnx_s_per_mp"]
        res["summary"]["bars_met"] = f"{sum(b['met'] for b in res['bars'])}/{len(res['bars'])}"
        res["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        res["quick"] = args.quick
        results["models"][name] = res
        print(f"{name}: {res['summary']} ({time.perf_counter() - t:.0f} s)", flush=True)
    order = {n: i for i, n in enumerate(NAMES)}
    results["models"] = dict(sorted(results["models"].items(), key=lambda kv: order.get(kv[0], 99)))
    json_path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    (args.out / f"{stem}.md").write_text(to_markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
