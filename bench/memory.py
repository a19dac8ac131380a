"""Memory: peak RSS of a worker pool process with all shipped models loaded, and of a process restoring 6.25, 25
and 100 MP pages (tiled). The decoded input and the output are whole-image arrays (1 byte a pixel each for gray);
everything else — tiles, the blending strip, ONNX Runtime's buffers — must not grow with the image.
``--modes`` instead restores the same page stored in each pixel mode (8-bit gray and RGB PNG, 16-bit PNG, float32
TIFF) at one size and writes bench/results/memory-modes<--label>.md (memory-decode… with --decode-only);
``--checkout`` measures another checkout's code (the "before" figures).
Usage: python bench/memory.py [--sizes 2500,5000,10000]
       python bench/memory.py --modes [--decode-only] [--side 10000] [--checkout ../main --label=-before]"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from common import REPO, markdown_table, peak_rss_mb, redis_url, write_results  # noqa: E402

from services.config import Settings  # noqa: E402
from services.inference.registry import load_manifest  # noqa: E402
from services.jobs import JobRequest  # noqa: E402
from services.queue.celery_app import create_app  # noqa: E402
from services.queue.clients import QueueClients  # noqa: E402
from tests.support.processes import start_worker  # noqa: E402


def page(side: int, folder: Path) -> Path:
    tile = np.asarray(Image.open(REPO / "samples" / "documents" / "dirty-page-1.png").convert("L").resize((1000, 1000)))
    reps = -(-side // 1000)
    big = np.tile(tile, (reps, reps))[:side, :side]
    path = folder / f"page-{side}.png"
    Image.fromarray(big).save(path, compress_level=1)
    return path


# What each mode's file holds: the same page, stored as each pixel mode (values scaled to the mode's range).
MODES = {
    "8-bit gray PNG": lambda gray: (Image.fromarray(gray), "png", {"compress_level": 1}),
    "8-bit RGB PNG": lambda gray: (Image.fromarray(np.dstack([gray] * 3)), "png", {"compress_level": 1}),
    "16-bit gray PNG": lambda gray: (Image.fromarray(gray.astype(np.uint16) * 257), "png", {"compress_level": 1}),
    "float32 gray TIFF": lambda gray: (Image.fromarray(gray.astype(np.float32) / 255), "tif",
                                       {"compression": "tiff_adobe_deflate"}),
}


def mode_file(name: str, gray: np.ndarray, folder: Path) -> Path:
    side = gray.shape[0]
    image, suffix, options = MODES[name](gray)
    path = folder / f"{name.replace(' ', '-')}-{side}.{suffix}"
    image.save(path, **options)
    return path


def all_models_loaded(work: Path) -> dict:
    """One worker (concurrency 1) runs one small job per shipped model; then its pool process is measured."""
    env = {"IMGRESTORE_REDIS_URL": redis_url(), "IMGRESTORE_QUEUE_PREFIX": f"mem{uuid.uuid4().hex[:6]}.",
           "IMGRESTORE_METRICS_PORT": "0", "IMGRESTORE_LOG_LEVEL": "WARNING"}
    config = Settings(**{k.removeprefix("IMGRESTORE_").lower(): v for k, v in env.items()})
    app = create_app(config)
    submitter = QueueClients.from_settings(config, app=app).submitter
    worker = start_worker(f"mem-{uuid.uuid4().hex[:4]}@bench", env, work, app=app)
    try:
        (child,) = worker.pool_pids()
        idle = peak_rss_mb(child)
        sample = work / "small.png"
        Image.fromarray((np.random.default_rng(0).random((256, 256, 3)) * 255).astype(np.uint8)).save(sample)
        models = []  # as the jobs name them: name@version, +int8 where the CPU runs a variant
        for spec in load_manifest(config.model_dir).models:
            job = submitter.submit(JobRequest(task=spec.task, profile=spec.profile or "auto", input_url=str(sample),
                                              output_url=str(work / f"out-{spec.name}.png")))
            done = submitter.wait(job.id, timeout=300)
            assert done.state.value == "succeeded", done.error
            models.append(done.result.model)
        loaded = peak_rss_mb(child)
    finally:
        worker.stop()
    return {"models": models, "pool_process_idle_mb": round(idle, 1),
            "pool_process_all_loaded_mb": round(loaded, 1)}


def restore_page(path: Path, out: Path, checkout: Path = REPO) -> tuple[float, float]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "tests.support.cli_with_rss", "run", "--task", "denoise",
                             "--profile", "document", str(path), "-o", str(out)],
                            cwd=checkout, capture_output=True, text=True, env={**os.environ, "IMGRESTORE_MAX_PIXELS":
                                                                           str(200_000_000)})
    assert result.returncode == 0, result.stderr
    return float(re.findall(r"PEAK_RSS_MB=([\d.]+)", result.stderr)[-1]), time.perf_counter() - started


_DECODE_ONLY = """
import sys
from pathlib import Path
from services.imaging.codecs import decode
from tests.support.cli_with_rss import peak_rss_mb
idle = peak_rss_mb()
image = decode(Path(sys.argv[1]).read_bytes(), 200_000_000)
print(f"{idle:.1f} {peak_rss_mb():.1f} {image.pixels.dtype}")
"""


def decode_peak(path: Path, checkout: Path) -> tuple[float, float, str]:
    """Peak RSS (MiB) of a fresh process that only decodes ``path`` with ``checkout``'s code, and that process's RSS
    before decoding."""
    result = subprocess.run([sys.executable, "-c", _DECODE_ONLY, str(path)], cwd=checkout, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    idle, peak, dtype = result.stdout.split()
    return float(peak), float(idle), dtype


def per_mode(side: int, label: str, work: Path, decode_only: bool, checkout: Path, modes: list[str]) -> None:
    rows = []
    megapixels = side * side / 1e6
    gray = np.asarray(Image.open(page(side, work)))
    for name in modes:
        path = mode_file(name, gray, work)
        row = {"mode": name, "megapixels": megapixels, "file_mb": round(path.stat().st_size / 2**20, 1)}
        peak, idle, dtype = decode_peak(path, checkout)
        row.update(decoded_as=dtype, decode_peak_rss_mb=peak, decode_mb_per_megapixel=round((peak - idle) / megapixels, 2))
        if not decode_only:
            rss, seconds = restore_page(path, work / "out", checkout)
            row.update(job_peak_rss_mb=rss, seconds=round(seconds, 1))
        rows.append(row)
        path.unlink()
    name = f"memory-{'decode' if decode_only else 'modes'}{label}"
    write_results(name, f"Memory per pixel mode{label}", {"side": side, "modes": rows}, [
        (f"A {side}×{side} page stored in each mode" + ("" if decode_only else
                                                         " (embedded `imgrestore run`, doc-denoise, tiled)"),
         markdown_table(rows) + "\n\n`decode_peak_rss_mb`: peak RSS (VmHWM) of a fresh process that only decodes the "
         "file; `decode_mb_per_megapixel`: that peak less the process before decoding, per megapixel. "
         "`job_peak_rss_mb`: the whole `imgrestore run` process. 16-bit and float gray are restored at 16 bits "
         "(2 bytes a pixel for the decoded input and for the output).")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="2500,5000,10000", help="page sides in pixels")
    parser.add_argument("--modes", action="store_true", help="peak RSS per pixel mode at --side instead")
    parser.add_argument("--side", type=int, default=10000, help="--modes: page side in pixels")
    parser.add_argument("--label", default="", help="--modes: suffix of the results' name (e.g. -before)")
    parser.add_argument("--decode-only", action="store_true", help="--modes: decode peaks only, no restore")
    parser.add_argument("--checkout", type=Path, default=REPO,
                        help="--modes: the checkout whose code decodes and restores (the subprocesses run in it)")
    parser.add_argument("--only", default=",".join(MODES), help="--modes: comma list of modes to measure")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="imgrestore-mem-"))
    if args.modes:
        return per_mode(args.side, args.label, work, args.decode_only, args.checkout.resolve(), args.only.split(","))
    loaded = all_models_loaded(work)
    rows = []
    for side in (int(s) for s in args.sizes.split(",")):
        path = page(side, work)
        rss, seconds = restore_page(path, work / "out")
        buffers = 2 * side * side / 2**20  # decoded input + output, gray uint8
        rows.append({"megapixels": side * side / 1e6, "peak_rss_mb": rss, "image_buffers_mb": round(buffers, 1),
                     "rest_mb": round(rss - buffers, 1), "seconds": round(seconds, 1)})
        path.unlink()
    # Peak RSS ≈ fixed + per_mp × MP: the slope is the whole-image buffers, the intercept the working set that
    # tiling keeps independent of the image.
    per_mp, fixed = np.polyfit([r["megapixels"] for r in rows], [r["peak_rss_mb"] for r in rows], 1)
    spread = max(r["rest_mb"] for r in rows) - min(r["rest_mb"] for r in rows)
    write_results("memory", "Memory", {"worker": loaded, "pages": rows, "rest_spread_mb": round(spread, 1),
                                       "fit_mb_per_megapixel": round(per_mp, 2), "fit_fixed_mb": round(fixed, 1)}, [
        ("Worker pool process", markdown_table([loaded], ["pool_process_idle_mb", "pool_process_all_loaded_mb"])
         + f"\n\nModels loaded: {', '.join(loaded['models'])}."),
        ("Restoring one document page (embedded `imgrestore run`, doc-denoise, tiled)",
         markdown_table(rows) + f"\n\nPeak RSS ≈ {fixed:.0f} MiB + {per_mp:.2f} MiB per megapixel. A gray pixel "
         "needs 2 bytes of whole-image buffers (decoded input, output) plus the compressed file and a transient "
         "copy while decoding/encoding; the tiled inference itself (tiles, blending strip, ONNX Runtime buffers) "
         f"is in the constant part. Peak RSS minus the two buffers varies by {spread:.0f} MiB across sizes.")])


if __name__ == "__main__":
    sys.exit(main())
