"""Throughput through the real queue: jobs/s with 1 and 2 worker processes on a 500-job batch (tiny model, small
images, so the service path — Redis, S3, codec, bookkeeping — dominates), and the Celery + Redis ceiling measured
with a no-op task two ways: Celery's own publish with results (``send_task``, a result per task) and the service's
path (lean messages pushed 500 per round trip, no results: what submissions and batches publish). Both against the
Redis-only ceiling (LPUSH rate) measured in the same run. Usage: python bench/throughput.py [--jobs 500] [--pings 2000]"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import boto3
import redis
import numpy as np
from PIL import Image

from common import lpush_ceiling, markdown_table, redis_url, write_results  # noqa: E402  (bench/ is the script's folder)

from services.config import Settings  # noqa: E402
from services.queue.batch_store import Batch  # noqa: E402
from services.queue.celery_app import create_app, encode_message  # noqa: E402
from services.queue.clients import QueueClients  # noqa: E402
from tests.support.onnx_models import write_model_dir  # noqa: E402
from tests.support.processes import start_moto, start_worker  # noqa: E402

AWS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--pings", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="imgrestore-bench-"))
    moto = start_moto(work)
    os.environ.update(AWS)
    s3 = boto3.client("s3", endpoint_url=moto.endpoint)
    s3.create_bucket(Bucket="bench")
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((args.size, args.size, 3)) * 255).astype(np.uint8)).save(
        buffer, "PNG")
    for i in range(args.jobs):
        s3.put_object(Bucket="bench", Key=f"in/{i:04d}.png", Body=buffer.getvalue())
    models = write_model_dir(work / "models")

    rows, pings = [], []
    redis_url_in_use = redis_url()
    try:
        for count in (1, 2):
            env = {**AWS, "IMGRESTORE_REDIS_URL": redis_url_in_use, "IMGRESTORE_S3_ENDPOINT_URL": moto.endpoint,
                   "IMGRESTORE_MODEL_DIR": str(models), "IMGRESTORE_QUEUE_PREFIX": f"bench{uuid.uuid4().hex[:6]}.",
                   "IMGRESTORE_INTRA_OP_THREADS": "1", "IMGRESTORE_METRICS_PORT": "0",
                   "IMGRESTORE_LOG_LEVEL": "WARNING"}
            settings = Settings(**{k.removeprefix("IMGRESTORE_").lower(): v for k, v in env.items()
                                   if k.startswith("IMGRESTORE_")})
            app = create_app(settings)
            queue = QueueClients.from_settings(settings, app=app)
            workers = [start_worker(f"bench{i}-{uuid.uuid4().hex[:4]}@bench", env, work, app=app)
                       for i in range(count)]
            try:
                rows.append(_batch_run(queue, count, args.jobs))
                pings.append(_ping_run(app, settings, count, args.pings))
                pings.append(_noop_run(settings, count, args.pings))
            finally:
                for worker in workers:
                    worker.stop()
    finally:
        moto.stop()
    ceiling = lpush_ceiling(redis_url_in_use)
    for row in rows:
        row["scaling"] = round(row["jobs_per_s"] / rows[0]["jobs_per_s"], 2)
    for row in pings:
        row["vs_lpush"] = round(row["tasks_per_s"] / ceiling["lpush_per_s"], 3)

    print(markdown_table(pings), ceiling, flush=True)
    write_results("throughput", "Queue throughput", {"jobs": rows, "noop": pings, "image_px": args.size,
                                                     "redis_ceiling": ceiling},
                  [(f"{args.jobs} jobs ({args.size}×{args.size} RGB PNG, tiny model, S3 on moto)",
                    markdown_table(rows, ["workers", "jobs", "seconds", "jobs_per_s", "scaling",
                                          "mean_job_ms", "queue_wait_ms_median"])),
                   ("No-op task (Celery + Redis ceiling); `vs_lpush`: against one client's LPUSH rate, "
                    f"{ceiling['lpush_per_s']}/s ({ceiling['lpush_pipelined_per_s']}/s pipelined), same run",
                    markdown_table(pings, ["workers", "path", "tasks", "seconds", "tasks_per_s", "vs_lpush"]))])


def _batch_run(queue: QueueClients, workers: int, jobs: int) -> dict:
    store, batches, submitter = queue.jobs, queue.batches, queue.batch_submitter
    started = time.perf_counter()
    batch = submitter.submit_inputs(Batch(task="watermark", output_prefix="s3://bench/out/"),
                                    [f"s3://bench/in/{i:04d}.png" for i in range(jobs)])
    while batches.get(batch.id).done < jobs:
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    records = [store.get(i) for i in batches.job_ids(batch.id)]
    assert all(r.state.value == "succeeded" for r in records)
    waits = [(r.started_at - r.created_at).total_seconds() * 1000 for r in records]
    return {"workers": workers, "jobs": jobs, "seconds": round(seconds, 2), "jobs_per_s": round(jobs / seconds, 1),
            "mean_job_ms": round(statistics.mean(r.timings.total for r in records) * 1000, 1),
            "queue_wait_ms_median": round(statistics.median(waits), 1)}


def _ping_run(app, settings, workers: int, count: int) -> dict:
    started = time.perf_counter()
    results = [app.send_task("imgrestore.ping", queue=settings.control_queue, ignore_result=False)
               for _ in range(count)]
    for result in results:
        result.get(timeout=120)
    seconds = time.perf_counter() - started
    return {"workers": workers, "path": "send_task + results", "tasks": count, "seconds": round(seconds, 2),
            "tasks_per_s": round(count / seconds, 1)}


def _noop_run(settings: Settings, workers: int, count: int) -> dict:
    """No-op tasks as the service publishes jobs: lean messages (``encode_message``) pushed 500 per round trip, no
    results; done when the queue is empty and nothing is left unacknowledged."""
    client = redis.Redis.from_url(settings.redis_url)
    queue = settings.control_queue
    messages = [encode_message("imgrestore.ping", [], queue, uuid.uuid4().hex) for _ in range(count)]
    started = time.perf_counter()
    for start in range(0, count, 500):
        client.lpush(queue, *messages[start:start + 500])
    while client.llen(queue) or client.hlen("unacked"):
        time.sleep(0.005)
    seconds = time.perf_counter() - started
    return {"workers": workers, "path": "lean messages, no results", "tasks": count, "seconds": round(seconds, 2),
            "tasks_per_s": round(count / seconds, 1)}


if __name__ == "__main__":
    sys.exit(main())
