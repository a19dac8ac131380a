"""The promotion gate of a training leg: evaluate, and ship only what is better without regressing a bar.

``promote_leg(model, leg_dir/model.pt)``:

1. exports the leg's weights to ``<leg dir>/candidate/`` (ONNX + parity + receptive field, as ``export`` does);
2. evaluates the candidate and the shipped model with the same eval code (``training.evaluate``; the shipped
   model's figures are reused from ``results/quality.json`` when they were made from the same file by the same
   version of that model's evaluation, ``training/quality/<model>.py: VERSION``);
3. promotes when the candidate's ``score`` (the model's headline figure, e.g. mean PSNR over the noise
   conditions) is higher and every bar the shipped model meets is still met: the ONNX file and its manifest
   entry go to ``services/models/``, the int8 variant is re-made (and dropped if it misses its own check),
   ``results/quality.{json,md}`` get the candidate's figures;
4. appends the leg to ``results/legs.jsonl`` (promoted or not, with the figures of both) and redraws
   ``results/legs.png`` (quality against accumulated training pixels, per model).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .evaluate import MODULES, evaluate_file, write_results
from .legs import LEGS_LOG, MODELS_DIR
from .onnx_runner import OnnxImageModel
from .quality.common import RESULTS
from .strips import write_strip
from .train import load_trained

QUALITY_JSON = RESULTS / "quality.json"


@dataclass
class Decision:
    promote: bool
    reason: str


def decide(incumbent: dict[str, Any], candidate: dict[str, Any]) -> Decision:
    """Higher score and no bar lost (bars are matched by name; a bar the incumbent misses may stay missed)."""
    was_met = {b["bar"] for b in incumbent["bars"] if b["met"]}
    now_met = {b["bar"] for b in candidate["bars"] if b["met"]}
    lost = sorted(was_met - now_met)
    if lost:
        return Decision(False, "bars no longer met: " + "; ".join(lost))
    gained = sorted(now_met - was_met)
    if candidate["score"] <= incumbent["score"]:
        return Decision(False, f"score {candidate['score']:.3f} not above the shipped {incumbent['score']:.3f}")
    return Decision(True, f"score {incumbent['score']:.3f} -> {candidate['score']:.3f}"
                          + (f"; newly met: {'; '.join(gained)}" if gained else ""))


def int8_bars_lost(fp32: dict[str, Any], int8: dict[str, Any]) -> list[str]:
    """Bars the fp32 model meets and its int8 variant does not: an int8 variant ships only without any (the
    service serves it by default on CPU, so a lost bar would be lost for most users)."""
    return sorted({b["bar"] for b in fp32["bars"] if b["met"]} - {b["bar"] for b in int8["bars"] if b["met"]})


def _drop_int8(name: str, models_dir: Path, int8_json: Path) -> None:
    from export.manifest import read_manifest, write_manifest

    manifest_path = models_dir / "manifest.json"
    manifest = read_manifest(manifest_path)
    for entry in manifest["models"]:
        if entry["name"] == name:
            for variant in [v for v in entry.get("variants", []) if v["precision"] == "int8"]:
                (models_dir / variant["file"]).unlink(missing_ok=True)
            entry["variants"] = [v for v in entry.get("variants", []) if v["precision"] != "int8"]
    write_manifest(manifest_path, manifest)
    results = json.loads(int8_json.read_text())
    results["models"].pop(name, None)
    write_results(results, int8_json.parent, int8_json.stem)


def manifest_entry(models_dir: Path, name: str) -> dict[str, Any]:
    """Model ``name``'s entry in the ``manifest.json`` of ``models_dir`` (the shipped models, or a candidate's
    folder)."""
    manifest = json.loads((models_dir / "manifest.json").read_text())
    return next(m for m in manifest["models"] if m["name"] == name)


def incumbent_result(name: str, models_dir: Path = MODELS_DIR, quality_json: Path = QUALITY_JSON) -> dict[str, Any]:
    entry = manifest_entry(models_dir, name)
    if quality_json.is_file():
        known = json.loads(quality_json.read_text())["models"].get(name)
        if known and known.get("sha256") == entry["sha256"] and known.get("eval_version") == MODULES[name].VERSION \
                and not known.get("quick"):
            return known
    print(f"{name}: evaluating the shipped model with eval version {MODULES[name].VERSION}", flush=True)
    return evaluate_file(name, models_dir / entry["file"], entry["tiling"]["multiple_of"])


def _record_quality(name: str, result: dict[str, Any], quality_json: Path) -> None:
    results = json.loads(quality_json.read_text()) if quality_json.is_file() else {"models": {}}
    results["models"][name] = result
    write_results(results, quality_json.parent, quality_json.stem)


def _ship(name: str, model_pt: Path, candidate_dir: Path, models_dir: Path, quality_json: Path) -> dict[str, Any]:
    """Copies the candidate into ``models_dir``, re-makes the int8 variant, refreshes the manifest metrics."""
    from export.manifest import read_manifest, upsert, write_manifest

    entry = manifest_entry(candidate_dir, name)
    shutil.copyfile(candidate_dir / entry["file"], models_dir / entry["file"])
    write_strip(name, OnnxImageModel(models_dir / entry["file"], entry["tiling"]["multiple_of"]), quality_json.parent)
    manifest_path = models_dir / "manifest.json"
    write_manifest(manifest_path, upsert(read_manifest(manifest_path), entry))  # drops the stale int8 variant
    return remake_int8(name, model_pt.parent, models_dir, quality_json)


def remake_int8(name: str, run_dir: Path, models_dir: Path = MODELS_DIR,
                quality_json: Path = QUALITY_JSON) -> dict[str, Any]:
    """Quantises the shipped model again (its agreement check, then the bars check) and refreshes its manifest
    metrics from ``quality_json`` and the leg's ``run_dir``; also on its own, after a change of the quantisation."""
    from export.__main__ import main as export_main
    from export.quantize import main as quantize_main

    int8 = quantize_main([name, "--out", str(models_dir)])
    if int8 == 0 and manifest_entry(models_dir, name).get("variants"):
        from .evaluate import main as evaluate_main

        evaluate_main([name, "--models-dir", str(models_dir), "--precision", "int8", "--out", str(quality_json.parent)])
        int8_json = quality_json.parent / f"{quality_json.stem}-int8.json"
        fp32 = json.loads(quality_json.read_text())["models"][name]
        lost = int8_bars_lost(fp32, json.loads(int8_json.read_text())["models"][name])
        if lost:
            _drop_int8(name, models_dir, int8_json)
            print(f"{name}: int8 variant dropped, it loses bars the fp32 model meets: {'; '.join(lost)}", flush=True)
    # Metrics of both precisions into the manifest entry (export reads them back by sha256).
    export_main([name, "--manifest-only", "--out", str(models_dir), "--quality", str(quality_json),
                 "--runs-dir", str(run_dir.parent), "--run", f"{name}={run_dir.name}"])
    return manifest_entry(models_dir, name)


def promote_leg(name: str, model_pt: Path, models_dir: Path = MODELS_DIR, quality_json: Path = QUALITY_JSON,
                log: Path = LEGS_LOG, quick: bool = False) -> Decision:
    from export.pipeline import export_model

    model, blob = load_trained(model_pt)
    leg = blob.get("leg", {})
    candidate_dir = model_pt.parent / "candidate"
    shutil.rmtree(candidate_dir, ignore_errors=True)
    candidate_dir.mkdir(parents=True)
    torch.set_num_threads(2)
    entry = export_model(name, model, blob, candidate_dir, candidate_dir / "none.json", dt.date.today().isoformat())
    if quick:  # a smoke leg compares like with like, never against a full evaluation
        shipped = manifest_entry(models_dir, name)
        incumbent = evaluate_file(name, models_dir / shipped["file"], shipped["tiling"]["multiple_of"], quick=True)
    else:
        incumbent = incumbent_result(name, models_dir, quality_json)
    candidate = evaluate_file(name, candidate_dir / entry["file"], entry["tiling"]["multiple_of"], quick=quick)
    decision = decide(incumbent, candidate)
    print(f"{name}: {'PROMOTED' if decision.promote else 'kept the shipped model'}: {decision.reason}", flush=True)
    if decision.promote:
        _record_quality(name, candidate, quality_json)
        _ship(name, model_pt, candidate_dir, models_dir, quality_json)
    elif not quick:
        _record_quality(name, incumbent, quality_json)  # the shipped model's figures under the current eval
    append_leg(log, {
        "model": name, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config": blob["config"]["name"], **{k: leg.get(k) for k in ("index", "minutes", "steps", "crops", "pixels",
                                                                      "pixels_per_second", "bf16", "threads", "seed",
                                                                      "peak_lr")},
        "eval_version": MODULES[name].VERSION, "quick": quick,
        "candidate": {"score": round(candidate["score"], 4), **candidate["summary"]},
        "shipped_before": {"score": round(incumbent["score"], 4), **incumbent["summary"]},
        "promoted": decision.promote, "reason": decision.reason,
    })
    if not quick:
        plot_legs(log, log.with_name("legs.png"))
    return decision


def append_leg(log: Path, record: dict[str, Any]) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_legs(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []


def score_curve(legs: list[dict[str, Any]]) -> tuple[list[float], list[float], list[float]]:
    """One model's legs -> (accumulated gigapixels, each leg's candidate score, the shipped score), the shipped
    curve one point longer: it starts with the model shipped before the first leg plotted. Scores of another
    evaluation version do not compare, so only the latest version's legs are plotted, at the pixels accumulated
    over all legs."""
    version = legs[-1].get("eval_version")
    total, xs, cand, shipped = 0.0, [], [], []
    for r in legs:
        before, total = total, total + (r.get("pixels") or 0) / 1e9
        if r.get("eval_version") != version:
            continue
        if not xs:
            xs, shipped = [before], [r["shipped_before"]["score"]]
        xs.append(total)
        cand.append(r["candidate"]["score"])
        shipped.append(r["candidate"]["score"] if r["promoted"] else r["shipped_before"]["score"])
    return xs, cand, shipped


def plot_legs(log: Path, path: Path) -> None:
    """Score of each leg's candidate (and what shipped) against the training pixels accumulated so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    legs = [r for r in read_legs(log) if not r.get("quick")]
    models = sorted({r["model"] for r in legs})
    if not models:
        return
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False)
    for ax, name in zip(axes[0], models):
        xs, cand, shipped = score_curve([r for r in legs if r["model"] == name])
        ax.plot(xs[1:], cand, "o", color="tab:gray", label="leg result")
        ax.step(xs, shipped, "-", where="post", color="tab:blue", label="shipped")
        ax.set_title(name)
        ax.set_xlabel("training gigapixels (accumulated)")
        ax.set_ylabel(getattr(MODULES[name], "SCORE_LABEL", "eval score (dB)"))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
