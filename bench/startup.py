"""Start-up and the whole CLI on one page (issue 12, items 3 and 5), each against a baseline measured in the same run.

1. Time to first inference of ``imgrestore run`` on one small page (the 0.8 MP sample): wall seconds from the
   spawn to the first ONNX Runtime call, and the CPU seconds the process used by then (load-independent), for this
   tree and — with ``--baseline-ref`` — the tree of an older commit, runs alternating. Target: ≤ 0.3 s wall.
2. The whole CLI on an 8.4 MP letter page (2550 × 3300, 300 dpi) against ``unpaper`` (defaults; PNG in, PGM out)
   on the same page, alternating, ratio pair by pair. Target: ≤ 1.0×.
3. Tile size on that page and on a 1 MP page: inference seconds and peak RSS of the whole CLI at 512 and 768 px.
4. ONNX Runtime session creation by graph optimisation level, and from a saved optimised graph: CPU ms to create
   and to run one 4 × 512² tile batch.

Under load (a training leg on the cores) wall times are long and noisy: quote the ratios and CPU seconds, and rerun
on a quiet machine. Usage: nice -n 19 python bench/startup.py [--runs 5] [--baseline-ref 8b4d884]"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common import REPO, markdown_table, write_results  # noqa: E402

SMALL_PAGE = REPO / "samples" / "documents" / "dirty-page-1.png"
LETTER = (2550, 3300)  # US letter at 300 dpi: 8.4 MP


def letter_page(folder: Path) -> Path:
    """The sample page scaled to a 300-dpi letter sheet, with scanner-like noise (seeded): 8.4 MP gray PNG."""
    page = Image.open(SMALL_PAGE).convert("L").resize(LETTER, Image.LANCZOS)
    noisy = np.asarray(page, dtype=np.float32) + np.random.default_rng(12).normal(0, 4, (LETTER[1], LETTER[0]))
    path = folder / "letter-8.4mp.png"
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path)  # Pillow's level 6, as a scanner tool
    return path


def one_mp_page(folder: Path) -> Path:
    path = folder / "page-1mp.png"
    Image.open(SMALL_PAGE).convert("L").resize((1000, 1000)).save(path)
    return path


def timed(argv: list[str], env: dict | None = None) -> dict:
    """Runs argv to the end: wall seconds, CPU seconds (user + sys of the finished child), stderr."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    spawned = time.time()
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "spawned": spawned, "stderr": result.stderr, "stdout": result.stdout}


def tree_env(tree: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(tree), "IMGRESTORE_LOG_LEVEL": "WARNING"}


def first_inference(tree: Path, out: Path) -> dict:
    run = timed([sys.executable, str(REPO / "bench" / "first_inference.py"), "run", "--task", "denoise", "--profile",
                 "document", str(SMALL_PAGE), "-o", str(out)], tree_env(tree))
    stamps = json.loads(re.findall(r"FIRST_INFERENCE=(.*)", run["stderr"])[-1])
    return {"first_inference_wall_s": stamps["wall"] - run["spawned"], "first_inference_cpu_s": stamps["cpu_s"],
            "model_load_s": stamps["model_load_s"],
            "model_load_started_cpu_s": stamps["model_load_started_cpu_s"], "modules": stamps["modules"],
            "service_only_modules": stamps["service_only_modules"], "whole_run_wall_s": run["wall_s"],
            "whole_run_cpu_s": run["cpu_s"]}


def baseline_tree(ref: str, folder: Path) -> Path:
    """The files of ``ref`` (no worktree, no checkout: git archive), to run the same probe against."""
    tree = folder / f"tree-{ref}"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", ref, "services"], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def median_of(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def startup_section(runs: int, ref: str | None, work: Path) -> tuple[dict, str]:
    trees = {"this tree": REPO}
    if ref:
        trees[f"baseline {ref}"] = baseline_tree(ref, work)
    floor = [timed([sys.executable, "-c", "pass"]) for _ in range(runs)]
    measured: dict[str, list[dict]] = {name: [] for name in trees}
    for index in range(runs):
        for name, tree in trees.items():  # alternating, so drift hits both alike
            measured[name].append(first_inference(tree, work / f"out-{index}"))
    rows = []
    for name, found in measured.items():
        rows.append({"tree": name, "first_inference_wall_s": round(median_of(found, "first_inference_wall_s"), 3),
                     "first_inference_cpu_s": round(median_of(found, "first_inference_cpu_s"), 3),
                     "cpu_before_model_load_s": round(median_of(found, "model_load_started_cpu_s"), 3),
                     "model_load_s": round(median_of(found, "model_load_s"), 3),
                     "modules": found[0]["modules"],
                     "service_only_modules": ", ".join(found[0]["service_only_modules"]) or "none",
                     "whole_run_wall_s": round(median_of(found, "whole_run_wall_s"), 3)})
    data = {"python_start_wall_s": round(median_of(floor, "wall_s"), 3),
            "python_start_cpu_s": round(median_of(floor, "cpu_s"), 3), "rows": rows, "runs": measured}
    text = markdown_table(rows) + (
        f"\n\nMedians of {runs} runs each, alternating. `python -c pass` in the same run: "
        f"{data['python_start_wall_s']:.3f} s wall, {data['python_start_cpu_s']:.3f} s CPU.")
    if ref:
        ours, base = rows[0], rows[1]
        data["cpu_ratio"] = round(ours["first_inference_cpu_s"] / base["first_inference_cpu_s"], 3)
        data["wall_ratio"] = round(ours["first_inference_wall_s"] / base["first_inference_wall_s"], 3)
        text += (f" This tree against {ref}: **{data['cpu_ratio']:.2f}× the CPU seconds to first inference, "
                 f"{data['wall_ratio']:.2f}× the wall seconds**; {ours['modules']} modules imported instead of "
                 f"{base['modules']}.")
    return data, text


def cli_argv(page: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "services.cli", "run", "--task", "denoise", "--profile", "document", *extra,
            str(page), "-o", str(out)]


def unpaper_section(runs: int, page: Path, work: Path) -> tuple[dict, str]:
    unpaper = shutil.which("unpaper")
    if unpaper is None:
        return {"skipped": "unpaper not installed"}, "unpaper not installed: not measured."
    pairs = []
    for index in range(runs + 1):  # the first pair warms the page cache and is not counted
        ours = timed(cli_argv(page, work / "cli-out"), tree_env(REPO))
        theirs = timed([unpaper, "--overwrite", str(page), str(work / "unpaper-out.pgm")])
        if index:
            pairs.append({"cli_wall_s": ours["wall_s"], "cli_cpu_s": ours["cpu_s"], "unpaper_wall_s": theirs["wall_s"],
                          "unpaper_cpu_s": theirs["cpu_s"], "wall_ratio": ours["wall_s"] / theirs["wall_s"]})
    row = {key: round(median_of(pairs, key), 3) for key in pairs[0]}
    text = markdown_table([row]) + (
        f"\n\nMedians of {runs} pairs (CLI, then unpaper, alternating; a first pair warms up and is not counted); "
        f"wall_ratio is CLI / unpaper pair by pair, its median **{row['wall_ratio']:.2f}×** (target ≤ 1.0×). "
        "unpaper reads the same PNG and writes an uncompressed PGM (it writes no PNG); the CLI writes a PNG. "
        "The CLI uses both cores for inference, unpaper one: CPU seconds are shown too.")
    return {"page": {"width": LETTER[0], "height": LETTER[1]}, "median": row, "pairs": pairs}, text


def peak_rss_run(page: Path, out: Path, tile: int) -> dict:
    run = timed([sys.executable, "-m", "tests.support.cli_with_rss", "run", "--task", "denoise", "--profile",
                 "document", "--json", "--tile-size", str(tile), str(page), "-o", str(out)], tree_env(REPO))
    summary = json.loads(run["stdout"])
    return {"infer_s": summary["results"][0]["timings"]["infer"],
            "peak_rss_mb": float(re.findall(r"PEAK_RSS_MB=([\d.]+)", run["stderr"])[-1]), "wall_s": run["wall_s"]}


def tile_section(runs: int, pages: dict[str, Path], work: Path) -> tuple[dict, str]:
    rows = []
    for name, page in pages.items():
        found: dict[int, list[dict]] = {512: [], 768: []}
        for _ in range(runs):
            for tile in found:
                found[tile].append(peak_rss_run(page, work / f"tile-{tile}", tile))
        small, large = ({k: median_of(found[t], k) for k in found[t][0]} for t in (512, 768))
        rows.append({"page": name, "infer_512_s": round(small["infer_s"], 3), "infer_768_s": round(large["infer_s"], 3),
                     "infer_768_vs_512": round(large["infer_s"] / small["infer_s"], 3),
                     "peak_rss_512_mb": round(small["peak_rss_mb"], 1), "peak_rss_768_mb": round(large["peak_rss_mb"], 1),
                     "extra_rss_768_mb": round(large["peak_rss_mb"] - small["peak_rss_mb"], 1)})
    text = markdown_table(rows) + (
        f"\n\nMedians of {runs} runs each (alternating), whole `imgrestore run --json --tile-size T` processes: "
        "infer is the job's own inference timing, peak RSS the process's VmHWM. Tile batch 4 (the default).")
    return {"rows": rows}, text


def session_section(runs: int) -> tuple[dict, str]:
    """CPU ms (this process, all threads) to create a doc-denoise int8 session and to run one 4 × 512² batch."""
    import onnxruntime as ort

    model = REPO / "services" / "models" / "doc-denoise-int8.onnx"
    saved = Path(tempfile.mkdtemp()) / "optimised.onnx"
    batch = np.random.default_rng(0).random((4, 1, 512, 512), dtype=np.float32)
    levels = {"disable_all": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all (the service's)": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}

    def measure(source: Path, level, save_to: Path | None = None) -> tuple[float, float]:
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        if save_to is not None:
            options.optimized_model_filepath = str(save_to)
        started = time.process_time()
        session = ort.InferenceSession(source.read_bytes(), sess_options=options, providers=["CPUExecutionProvider"])
        created = time.process_time()
        session.run(None, {session.get_inputs()[0].name: batch})
        return (created - started) * 1000, (time.process_time() - created) * 1000

    measure(model, levels["all (the service's)"], saved)  # writes the optimised graph once
    found: dict[str, list[tuple[float, float]]] = {name: [] for name in [*levels, "saved all-optimised, loaded unoptimised"]}
    for _ in range(runs):
        for name, level in levels.items():
            found[name].append(measure(model, level))
        found["saved all-optimised, loaded unoptimised"].append(
            measure(saved, ort.GraphOptimizationLevel.ORT_DISABLE_ALL))
    rows = [{"session": name, "create_cpu_ms": round(statistics.median(c for c, _ in got), 1),
             "first_batch_cpu_ms": round(statistics.median(r for _, r in got), 1)} for name, got in found.items()]
    return {"rows": rows}, markdown_table(rows) + (
        f"\n\nMedians of {runs}; CPU ms of this process (2 intra-op threads: spinning counts).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline-ref", help="git commit to compare start-up with (e.g. the one before this work)")
    parser.add_argument("--skip", default="", help="comma list of sections to leave out: startup,unpaper,tiles,sessions")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    work = Path(tempfile.mkdtemp(prefix="imgrestore-startup-"))
    try:
        letter, small = letter_page(work), one_mp_page(work)
        data, sections = {"runs": args.runs}, []
        if "startup" not in skip:
            data["startup"], text = startup_section(args.runs, args.baseline_ref, work)
            sections.append(("Time to first inference: `imgrestore run` on the 0.8 MP sample page", text))
        if "unpaper" not in skip:
            data["unpaper"], text = unpaper_section(args.runs, letter, work)
            sections.append(("Whole CLI vs unpaper, 8.4 MP letter page (2550 × 3300)", text))
        if "tiles" not in skip:
            data["tiles"], text = tile_section(args.runs, {"1 MP": small, "8.4 MP": letter}, work)
            sections.append(("Tile size 512 vs 768", text))
        if "sessions" not in skip:
            data["sessions"], text = session_section(args.runs)
            sections.append(("ONNX Runtime session: graph optimisation level and a saved optimised graph", text))
        data["load_average_at_end"] = round(os.getloadavg()[0], 2)
        write_results("startup", "Start-up, whole CLI vs unpaper, tile size", data, sections)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
