"""Soak: many mixed jobs through one worker (concurrency 1), its memory watched the whole way.

The mix: the four restorations (document and photo denoise, colorize, watermark), sizes log-uniform in
[--min-mp, --max-mp] (0.05-20 MP by default), PNG / JPEG / TIFF, 16-bit grey for a share of the PNG and TIFF
inputs, and ~5 % bad inputs (truncated files, text named .png). The RSS of the worker's main process and of its pool
process is sampled every --sample-every finished jobs, between two jobs (the bench queues no further than the next
sample, so the worker is idle when it is taken), and plotted (bench/results/<name>.png) with the pool's peak in each
interval (polled every 50 ms: the jobs in flight).

Pass: after --warmup jobs the pool process grows by at most 50 MB to the end of the run, every job reaches a final
state (nothing lost), the bad inputs and only they fail.

Input shapes are NOT fixed by tiling here: an image smaller than a tile is one tile of its own size, and a larger
one is cut into tiles shrunk to cover it evenly (``inference.tiling.axis_starts``), each a multiple of the model's
``multiple_of``; the last batch of a job holds what is left. So the models see many shapes, all bounded by
``tile_size`` × ``tile_batch_size``: the results count the distinct (batch, height, width) inputs each model got,
and the second half of the run's growth tells a plateau (arenas sized for the largest shape seen) from a leak.

Inputs are local files made just before they are queued and deleted with their outputs once the job ends, so disk
stays flat at any job count. Redis: IMGRESTORE_BENCH_REDIS_URL (default db 14; the bench empties it).
Usage: python bench/soak.py [--jobs 2000] [--max-mp 20] [--name soak]
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from common import git_commit, markdown_table, redis_url, write_results, RESULTS  # noqa: E402

from services.config import Settings  # noqa: E402
from services.inference.registry import ModelRegistry  # noqa: E402
from services.inference.tiling import TilePlan  # noqa: E402
from services.jobs import JobRequest, JobState  # noqa: E402
from services.queue.celery_app import create_app  # noqa: E402
from services.queue.job_store import JobStore  # noqa: E402
from services.queue.submission import Submitter  # noqa: E402
from tests.support.processes import start_worker  # noqa: E402

KINDS = [("denoise", "document"), ("denoise", "photo"), ("colorize", "auto"), ("watermark", "auto")]
FORMATS = ["png", "jpeg", "tiff"]
GROWTH_LIMIT_MB = 50.0


@dataclass
class Planned:
    index: int
    task: str
    profile: str
    megapixels: float
    fmt: str
    sixteen_bit: bool
    bad: bool


def plan(jobs: int, min_mp: float, max_mp: float, bad_share: float, seed: int) -> list[Planned]:
    rng = np.random.default_rng(seed)
    planned = []
    for index in range(jobs):
        task, profile = KINDS[index % len(KINDS)]
        megapixels = float(np.exp(rng.uniform(np.log(min_mp), np.log(max_mp))))
        fmt = FORMATS[int(rng.integers(len(FORMATS)))]
        sixteen = fmt != "jpeg" and task == "denoise" and rng.random() < 0.3
        planned.append(Planned(index, task, profile, megapixels, fmt, sixteen, bool(rng.random() < bad_share)))
    return planned


def dimensions(job: Planned) -> tuple[int, int]:
    width = max(16, int((job.megapixels * 1e6 * 4 / 3) ** 0.5))
    return width, max(16, int(job.megapixels * 1e6 / width))


def model_inputs(job: Planned, settings: Settings, registry: ModelRegistry) -> tuple[str, set[tuple[int, int, int]]]:
    """The model a (good) job runs and the (batch, height, width) inputs it feeds it, as the restorer tiles it."""
    spec = registry.resolve(job.task, job.profile if job.task == "denoise" else None)
    tile = settings.tile_size or spec.tiling.tile_size
    overlap = settings.tile_overlap if settings.tile_overlap is not None else spec.tiling.overlap
    width, height = dimensions(job)
    plan = TilePlan.for_image(height, width, tile, min(overlap, tile // 2), spec.tiling.multiple_of)
    batch = settings.tile_batch_size
    batches = {min(batch, plan.count)} | ({plan.count % batch} if plan.count > batch and plan.count % batch else set())
    return spec.qualified_name, {(b, plan.tile_h, plan.tile_w) for b in batches}


def make_input(job: Planned, folder: Path) -> Path:
    """A synthetic page or photo of the planned size and format (bad ones: cut short, or not an image at all)."""
    width, height = dimensions(job)
    rng = np.random.default_rng(job.index)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 0.5 + 0.3 * np.sin(xx / (7 + job.index % 13)) * np.cos(yy / (11 + job.index % 5))
    base += rng.normal(0, 0.08, size=base.shape).astype(np.float32)
    base = np.clip(base, 0, 1)
    if job.sixteen_bit:
        image = Image.fromarray((base * 65535).astype(np.uint16))
    elif job.task == "colorize" or job.profile == "document":
        image = Image.fromarray((base * 255).astype(np.uint8))
    else:
        rgb = np.stack([base, np.roll(base, 5, axis=1), base[::-1]], axis=-1)
        image = Image.fromarray((rgb * 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF"}[job.fmt],
               **({"compress_level": 1} if job.fmt == "png" else {}))
    data = buffer.getvalue()
    if job.bad:
        data = data[: len(data) // 3] if job.index % 2 else b"not an image, a text file named like one\n" * 20
    path = folder / f"in-{job.index:05d}.{ {'jpeg': 'jpg', 'tiff': 'tif'}.get(job.fmt, job.fmt) }"
    path.write_bytes(data)
    return path


def rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:  # the pool process was replaced (counted as a restart)
        return float("nan")
    for line in status.splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def plot(samples: list[dict], warmup: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [s["jobs_done"] for s in samples]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(done, [s["pool_rss_mb"] for s in samples], marker=".", label="pool process between jobs")
    ax.plot(done, [s.get("pool_peak_mb") for s in samples], color="C0", alpha=0.35, linewidth=1,
            label="pool process, peak while jobs ran")
    ax.plot(done, [s["main_rss_mb"] for s in samples], marker=".", label="worker main process")
    ax.axvline(warmup, color="grey", linestyle="--", linewidth=1, label=f"end of warm-up ({warmup} jobs)")
    ax.set_xlabel("jobs finished")
    ax.set_ylabel("RSS (MiB)")
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--min-mp", type=float, default=0.05)
    parser.add_argument("--max-mp", type=float, default=20.0)
    parser.add_argument("--bad-share", type=float, default=0.05)
    parser.add_argument("--sample-every", type=int, default=20, help="finished jobs between RSS samples")
    parser.add_argument("--warmup", type=int, default=100, help="jobs before RSS growth is counted")
    parser.add_argument("--window", type=int, default=4, help="jobs queued ahead of the worker")
    parser.add_argument("--job-timeout", type=float, default=1800.0, help="seconds one job may take before it "
                        "counts as lost")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--name", default="soak", help="results as bench/results/<name>.{json,md,png}")
    parser.add_argument("--note", default="", help="a line for the results, e.g. why this run was reduced")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="imgrestore-soak-"))
    env = {"IMGRESTORE_REDIS_URL": redis_url(), "IMGRESTORE_QUEUE_PREFIX": f"soak{uuid.uuid4().hex[:6]}.",
           "IMGRESTORE_METRICS_PORT": "0", "IMGRESTORE_LOG_LEVEL": "WARNING", "IMGRESTORE_MAX_PIXELS": "30000000"}
    settings = Settings(**{k.removeprefix("IMGRESTORE_").lower(): v for k, v in env.items()})
    app = create_app(settings)
    store = JobStore.from_url(settings.redis_url, settings.key_prefix)
    submitter = Submitter(settings, store, app)
    planned = plan(args.jobs, args.min_mp, args.max_mp, args.bad_share, args.seed)
    worker = start_worker(f"soak-{uuid.uuid4().hex[:4]}@bench", env, work, concurrency=1, app=app)
    (pool_pid,) = worker.pool_pids()
    samples: list[dict] = [{"jobs_done": 0, "main_rss_mb": round(rss_mb(worker.pid), 1),
                            "pool_rss_mb": round(rss_mb(pool_pid), 1), "pool_pid": pool_pid,
                            "pool_peak_mb": round(rss_mb(pool_pid), 1)}]
    finished: list[dict] = []
    peak = 0.0  # the pool's largest RSS seen (polled every 50 ms) since the last sample: the jobs in flight
    pending: dict[str, tuple[Planned, Path, Path, float]] = {}
    upcoming = iter(planned)
    started = time.perf_counter()
    try:
        while len(finished) < len(planned):
            # Never queue past the next sample: the worker is then idle when it is taken, between two jobs.
            next_sample = (len(finished) // args.sample_every + 1) * args.sample_every
            while (len(pending) < args.window and len(finished) + len(pending) < next_sample
                   and (job := next(upcoming, None)) is not None):
                source = make_input(job, work)
                target = work / f"out-{job.index:05d}{source.suffix}"
                queued = submitter.submit(JobRequest(task=job.task, profile=job.profile, input_url=str(source),
                                                     output_url=str(target)))
                pending[queued.id] = (job, source, target, time.perf_counter())
            records = {record.id: record for record in store.get_many(list(pending))}
            peak = max(peak, rss_mb(pool_pid))
            for job_id in list(pending):
                job, source, target, queued_at = pending[job_id]
                record = records.get(job_id)  # None: the record is gone, the job lost
                waited = time.perf_counter() - queued_at
                if (record is None or not record.state.finished) and waited < args.job_timeout:
                    continue
                del pending[job_id]
                finished.append({"index": job.index, "task": job.task, "profile": job.profile, "fmt": job.fmt,
                                 "sixteen_bit": job.sixteen_bit, "megapixels": round(job.megapixels, 3),
                                 "bad": job.bad, "state": record.state.value if record else "gone",
                                 "error": record.error.type if record and record.error else None,
                                 "seconds": round(record.timings.total, 3) if record else None})
                source.unlink(missing_ok=True)
                target.unlink(missing_ok=True)
                if len(finished) % args.sample_every == 0 or len(finished) == len(planned):
                    now_children = worker.pool_pids()
                    pool_pid = now_children[0] if now_children else pool_pid
                    samples.append({"jobs_done": len(finished), "main_rss_mb": round(rss_mb(worker.pid), 1),
                                    "pool_rss_mb": round(rss_mb(pool_pid), 1), "pool_pid": pool_pid,
                                    "pool_peak_mb": round(peak, 1)})
                    peak = 0.0
                    print(f"{len(finished)}/{len(planned)} jobs, pool RSS {samples[-1]['pool_rss_mb']} MiB, "
                          f"{time.perf_counter() - started:.0f} s", flush=True)
            time.sleep(0.05)
    finally:
        worker.stop()
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - started

    after_warmup = [s for s in samples if s["jobs_done"] >= args.warmup] or samples[-1:]
    growth = after_warmup[-1]["pool_rss_mb"] - after_warmup[0]["pool_rss_mb"]
    second_half = after_warmup[len(after_warmup) // 2:]
    late_growth = second_half[-1]["pool_rss_mb"] - second_half[0]["pool_rss_mb"]
    registry = ModelRegistry.from_settings(settings)
    shapes: dict[str, set] = {}
    for job in planned[:len(finished)]:
        if not job.bad:
            name, inputs = model_inputs(job, settings, registry)
            shapes.setdefault(name, set()).update(inputs)
    peak_growth = max(s["pool_rss_mb"] for s in after_warmup) - after_warmup[0]["pool_rss_mb"]
    lost = [f for f in finished if f["state"] not in (JobState.succeeded.value, JobState.failed.value)]
    wrongly_failed = [f for f in finished if f["state"] == "failed" and not f["bad"]]
    bad_succeeded = [f for f in finished if f["bad"] and f["state"] == "succeeded"]
    restarted = len({s["pool_pid"] for s in samples}) > 1
    passed = (growth <= GROWTH_LIMIT_MB and not lost and not wrongly_failed and not bad_succeeded
              and not restarted)
    summary = {
        "jobs": len(finished), "succeeded": sum(f["state"] == "succeeded" for f in finished),
        "failed": sum(f["state"] == "failed" for f in finished), "bad_inputs": sum(f["bad"] for f in finished),
        "lost": len(lost), "failed_but_good": len(wrongly_failed), "bad_but_succeeded": len(bad_succeeded),
        "megapixels_total": round(sum(f["megapixels"] for f in finished if not f["bad"]), 1),
        "seconds": round(seconds, 1), "warmup_jobs": args.warmup,
        "pool_rss_after_warmup_mb": after_warmup[0]["pool_rss_mb"], "pool_rss_end_mb": after_warmup[-1]["pool_rss_mb"],
        "pool_rss_growth_mb": round(growth, 1), "pool_rss_peak_growth_mb": round(peak_growth, 1),
        "pool_rss_growth_second_half_mb": round(late_growth, 1),
        "second_half_from_job": second_half[0]["jobs_done"],
        "model_input_shapes": {name: len(found) for name, found in sorted(shapes.items())},
        "largest_model_input": {name: max(found, key=lambda s: s[0] * s[1] * s[2])
                                for name, found in sorted(shapes.items())},
        "pool_process_restarted": restarted, "growth_limit_mb": GROWTH_LIMIT_MB, "passed": passed,
    }
    config = {k: getattr(args, k) for k in ("jobs", "min_mp", "max_mp", "bad_share", "sample_every", "warmup",
                                            "window", "seed")}
    title = f"Soak: {len(finished)} mixed jobs through one worker"
    plot(samples, args.warmup, RESULTS / f"{args.name}.png", title + (" (reduced run)" if args.note else ""))
    errors = sorted({f["error"] for f in finished if f["error"]})
    by_kind = [{"kind": f"{t}-{p}" if t == "denoise" else t,
                "jobs": sum(f["task"] == t and f["profile"] == p for f in finished),
                "failed": sum(f["task"] == t and f["profile"] == p and f["state"] == "failed" for f in finished),
                "median_seconds": float(np.median([f["seconds"] for f in finished if f["task"] == t and f["profile"] == p
                                                   and not f["bad"] and f["seconds"] is not None] or [0]))}
               for t, p in KINDS]
    verdict = "PASS" if passed else "FAIL"
    write_results(args.name, title, {"config": config, "summary": summary, "samples": samples, "jobs": finished,
                                     "commit": git_commit(), "note": args.note}, [
        ("Result", (f"**{verdict}**" + (f" — {args.note}" if args.note else "") + "\n\n")
         + markdown_table([summary], ["jobs", "succeeded", "failed", "bad_inputs", "lost", "failed_but_good",
                                      "pool_rss_after_warmup_mb", "pool_rss_end_mb", "pool_rss_growth_mb",
                                      "pool_rss_peak_growth_mb", "pool_rss_growth_second_half_mb", "seconds"])
         + f"\n\nConfiguration: {config}. Error types of the failed jobs: {', '.join(errors) or 'none'}. "
         f"Plot: `{args.name}.png`. Commit {git_commit()}."),
        ("By kind", markdown_table(by_kind)),
        ("Model input shapes", "Distinct (batch, height, width) inputs per model over the good jobs, as the "
         "restorer tiles them (tiles shrink to the image, the last batch holds the rest), and the largest:\n\n"
         + markdown_table([{"model": name, "distinct_shapes": len(found),
                            "largest": "×".join(map(str, summary["largest_model_input"][name]))}
                           for name, found in sorted(shapes.items())])),
        ("RSS samples", "Between jobs; `pool_peak_mb`: the largest pool RSS polled since the previous sample.\n\n"
         + markdown_table(samples, ["jobs_done", "main_rss_mb", "pool_rss_mb", "pool_peak_mb"])),
    ])
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
