"""Redelivery after a SIGKILL, with the production defaults: how long a job held by a worker that dies waits before
another worker starts it. Two real workers, one job blocked on its input (a named pipe, as a slow job), the holder
SIGKILLed (main process and pool), the time until the second delivery starts measured.

Usage: python bench/redelivery.py [--runs 3] [--label after] [--results-name redelivery]
Each run kills at a different point of the renewal cycle (after 1 s, then +1.3 s, ...).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from common import git_commit, markdown_table, redis_url, write_results  # noqa: E402

from services.config import Settings  # noqa: E402
from services.jobs import JobRequest, JobState  # noqa: E402
from services.queue.celery_app import create_app  # noqa: E402
from services.queue.clients import QueueClients  # noqa: E402
from tests.support.onnx_models import write_model_dir  # noqa: E402
from tests.support.processes import start_worker, wait_until  # noqa: E402


def one_run(env: dict, work: Path, hold: float) -> dict:
    settings = Settings(**{k.removeprefix("IMGRESTORE_").lower(): v for k, v in env.items()
                           if k.startswith("IMGRESTORE_")})
    app = create_app(settings)
    queue = QueueClients.from_settings(settings, app=app)
    store, submitter = queue.jobs, queue.submitter
    workers = [start_worker(f"rd{i}-{uuid.uuid4().hex[:6]}@bench", env, work, app=app) for i in range(2)]
    fifo = work / f"held-{uuid.uuid4().hex[:6]}.png"
    os.mkfifo(fifo)
    try:
        job = submitter.submit(JobRequest(task="denoise", input_url=str(fifo), output_url=str(fifo) + ".out.png"))
        wait_until(lambda: store.get(job.id).state is JobState.running, 60, "the job to start")
        holder = next(w for w in workers if w.name == store.get(job.id).worker)
        time.sleep(hold)
        killed = time.monotonic()
        holder.kill()
        wait_until(lambda: store.get(job.id).attempts >= 2, 600, "the second delivery", 0.05)
        delay = time.monotonic() - killed
        threading.Thread(target=lambda: fifo.write_bytes(_png()), daemon=True).start()
        final = submitter.wait(job.id, timeout=120)
        return {"hold_s": hold, "redelivery_s": round(delay, 2), "state": final.state.value,
                "attempts": final.attempts, "lost": final.lost}
    finally:
        for worker in workers:
            worker.stop(timeout=15)


def _png() -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((32, 32)) * 255).astype("uint8")).save(buffer, "PNG")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--label", default="after")
    parser.add_argument("--results-name", default="redelivery")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="imgrestore-redelivery-"))
    models = write_model_dir(work / "models")
    defaults = Settings()
    rows = []
    for run in range(args.runs):
        env = {"IMGRESTORE_REDIS_URL": redis_url(), "IMGRESTORE_MODEL_DIR": str(models),
               "IMGRESTORE_QUEUE_PREFIX": f"rd{uuid.uuid4().hex[:6]}.", "IMGRESTORE_METRICS_PORT": "0",
               "IMGRESTORE_INTRA_OP_THREADS": "1", "IMGRESTORE_LOG_LEVEL": "INFO"}
        row = one_run(env, work, hold=1.0 + 1.3 * run)
        print(row, flush=True)
        rows.append(row)
    delays = [r["redelivery_s"] for r in rows]
    knobs = {k: getattr(defaults, k) for k in ("visibility_timeout", "lease_renew_interval",
                                               "unacked_restore_interval")}
    for extra in ("lease_ttl", "reclaim_interval"):
        if hasattr(defaults, extra):
            knobs[extra] = getattr(defaults, extra)
    summary = {"label": args.label, "commit": git_commit(), "defaults": knobs, "runs": rows,
               "median_s": statistics.median(delays), "max_s": max(delays)}
    write_results(args.results_name, f"Redelivery after SIGKILL with default settings ({args.label})", summary, [
        ("Settings", ", ".join(f"{k} = {v}" for k, v in knobs.items())),
        ("Runs", markdown_table(rows)),
        ("Summary", f"median {summary['median_s']:.1f} s, max {summary['max_s']:.1f} s"),
    ])


if __name__ == "__main__":
    sys.exit(main())
