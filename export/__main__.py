"""``python -m export [NAME ...] [--runs-dir DIR] [--out DIR] [--manifest-only]``

For each model: loads ``training/runs/NAME/model.pt``, exports ``OUT/NAME.onnx``, checks parity (PyTorch vs
onnxruntime ≤ 1e-4 on random and real inputs), measures the effective receptive field for the tile overlap,
and writes the entry into ``OUT/manifest.json`` (metrics from ``training/results/quality.json`` when that
file evaluated this exact ONNX file). ``--manifest-only`` skips the export and refreshes the entries (e.g.
after ``python -m training.evaluate``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import torch

from training.config import MODEL_NAMES, RUNS_DIR
from training.train import load_trained

from .pipeline import export_model, refresh_entry

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "services" / "models"
# Which run (training/configs/RUN.json -> training/runs/RUN) each shipped model comes from, where the
# winning config is not the one named after the model (see training/README.md for the comparisons).
# A model promoted from its legs ships from its leg run; doc-denoise from the 0-minute leg that carried leg 0's
# weights into the paper-white graph (training/README.md, "Legs").
SHIPPED_RUNS = {"colorize": "colorize-leg", "doc-denoise": "doc-denoise-paper-white", "watermark": "watermark-leg",
                "photo-denoise": "photo-denoise-leg"}
QUALITY_JSON = Path(__file__).resolve().parents[1] / "training" / "results" / "quality.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export")
    p.add_argument("names", nargs="*", default=list(MODEL_NAMES))
    p.add_argument("--runs-dir", type=Path, default=RUNS_DIR)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--quality", type=Path, default=QUALITY_JSON)
    p.add_argument("--version", default=dt.date.today().strftime("%Y.%m.%d"))
    p.add_argument("--manifest-only", action="store_true")
    p.add_argument("--run", action="append", default=[], metavar="NAME=RUN",
                   help="ship the run training/runs/RUN as model NAME (e.g. doc-denoise=doc-denoise-long)")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    runs = {**SHIPPED_RUNS, **dict(item.split("=", 1) for item in args.run)}
    failed = 0
    for name in args.names:
        model_pt = args.runs_dir / runs.get(name, name) / "model.pt"
        if not model_pt.is_file():
            print(f"{name}: no {model_pt} (train it first: python -m training train {name})", file=sys.stderr)
            failed += 1
            continue
        model, blob = load_trained(model_pt)
        if args.manifest_only:
            entry = refresh_entry(name, model, blob, args.out, args.quality, args.version)
        else:
            entry = export_model(name, model, blob, args.out, args.quality, args.version)
        print(f"{name}: {entry['file']} sha256 {entry['sha256'][:12]}… parity max err "
              f"{entry.get('parity_max_abs_error', 'n/a')}, tiling {entry['tiling']}, "
              f"{entry['gflop_per_megapixel']} GFLOP/MP, metrics: {'yes' if entry['metrics'] else 'not evaluated yet'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
