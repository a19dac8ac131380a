"""Submissions per second through one ``imgrestore api`` process (uvicorn, real HTTP, keep-alive clients) at
concurrency 1, 8 and 32, with and without Idempotency-Keys; no worker, a redis-server of its own; against the
Redis-only ceiling (one client's LPUSH rate) measured in the same run. With ``--with-worker``, the same runs again
while one real ``imgrestore worker`` on the same cores restores what is submitted (a 128×128 RGB PNG in S3 on moto,
the shipped models or ``--worker-model tiny``): what an API on a node shared with a worker sustains.
Usage: python bench/api_load.py [--seconds 5] [--concurrency 1,8,32] [--with-worker [--worker-model real|tiny]]"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import boto3
import httpx
import numpy as np
from PIL import Image

from common import lpush_ceiling, markdown_table, write_results  # noqa: E402

from services.config import Settings  # noqa: E402
from services.queue.celery_app import create_app  # noqa: E402
from services.queue.clients import job_store  # noqa: E402
from tests.support.api_server import start_api  # noqa: E402
from tests.support.chaos import RedisServer  # noqa: E402
from tests.support.onnx_models import write_model_dir  # noqa: E402
from tests.support.processes import (MotoServer, WorkerProcess, start_moto, start_worker,  # noqa: E402
                                     wait_until)

TOKEN = "bench-" + uuid.uuid4().hex
INPUT_URL = "s3://bench/in/page.png"
IMAGE_PX = 128
AWS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
WORKER_COLUMNS = ["concurrency", "idempotency_keys", "submissions_per_s", "p50_ms", "p99_ms", "statuses",
                  "vs_no_worker", "restored", "restored_per_s"]


def run(url: str, concurrency: int, seconds: float, keys: bool) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
            while time.monotonic() < deadline:
                headers = {"Idempotency-Key": uuid.uuid4().hex} if keys else {}
                started = time.perf_counter()
                response = http.post("/v1/jobs", headers=headers,
                                     json={"task": "denoise", "input_url": INPUT_URL})
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    latencies.sort()
    return {"concurrency": concurrency, "idempotency_keys": keys, "submissions_per_s": round(len(latencies) / wall),
            "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
            "statuses": json.dumps(statuses)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--name", default="api_load", help="results file name")
    parser.add_argument("--with-worker", action="store_true",
                        help="also measure with one real worker restoring the submitted jobs on the same cores")
    parser.add_argument("--worker-model", choices=("real", "tiny"), default="real",
                        help="the worker's models: the shipped ones (services/models) or the tiny test models")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="imgrestore-load-"))
    redis_server = RedisServer(folder / "redis", options=("--appendonly", "no"))
    redis_server.start()
    env = {"IMGRESTORE_REDIS_URL": redis_server.url, "IMGRESTORE_METRICS_PORT": "0", "IMGRESTORE_LOG_LEVEL": "WARNING",
           "IMGRESTORE_MAX_QUEUED_JOBS": "0",
           # capacity, not policy: one bench token submits far more than a token's quotas allow
           "IMGRESTORE_API_SUBMISSIONS_PER_MINUTE_PER_TOKEN": "0", "IMGRESTORE_API_MAX_UNFINISHED_JOBS_PER_TOKEN": "0",
           "IMGRESTORE_API_TOKENS": json.dumps({TOKEN: {"name": "bench", "allow": ["s3://bench/"]}})}
    moto: MotoServer | None = None
    if args.with_worker:  # the input must exist before anything is queued, so that every job is a real restoration
        moto = start_moto(folder)
        env.update(AWS, IMGRESTORE_S3_ENDPOINT_URL=moto.endpoint)
        if args.worker_model == "tiny":
            env["IMGRESTORE_MODEL_DIR"] = str(write_model_dir(folder / "models"))
        _put_input(moto.endpoint)
    api = start_api(env, folder)
    worker_rows: list[dict] = []
    try:
        with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as http:
            for _ in range(20):  # warm-up: connections, scripts (a timed warm-up may finish nothing on a busy box)
                http.post("/v1/jobs", json={"task": "denoise", "input_url": INPUT_URL})
        rows = [run(api.url, c, args.seconds, keys) for keys in (False, True) for c in concurrencies]
        if args.with_worker:
            worker_rows = _run_with_worker(api.url, env, folder, concurrencies, args.seconds, rows)
        ceiling = lpush_ceiling(redis_server.url)
        for row in rows:
            row["vs_lpush"] = round(row["submissions_per_s"] / ceiling["lpush_per_s"], 3)
    finally:
        api.stop()
        if moto is not None:
            moto.stop()
        redis_server.stop()
    print(markdown_table(rows))
    sections = [
        ("POST /v1/jobs, keep-alive clients, no worker (the API and the clients share the machine); `vs_lpush`: "
         f"against one client's LPUSH rate, {ceiling['lpush_per_s']}/s, same run", markdown_table(rows))]
    results: dict = {"rows": rows, "redis_ceiling": ceiling}
    if worker_rows:
        print(markdown_table(worker_rows, WORKER_COLUMNS))
        model = "the shipped models" if args.worker_model == "real" else "the tiny test models"
        sections.append((
            f"The same, while one `imgrestore worker` (defaults: one pool process, ONNX Runtime picks its threads) "
            f"restores the submitted jobs on the same cores ({IMAGE_PX}×{IMAGE_PX} RGB PNG in S3 on moto, "
            f"`denoise`, {model}); `vs_no_worker`: against the row above without a worker, same run; `restored`: "
            "jobs the worker finished during the run", markdown_table(worker_rows, WORKER_COLUMNS)))
        results.update(rows_with_worker=worker_rows, worker_model=args.worker_model, image_px=IMAGE_PX)
    write_results(args.name, "Submissions through one API process", results, sections)


def _put_input(endpoint: str) -> None:
    buffer = io.BytesIO()
    pixels = (np.random.default_rng(0).random((IMAGE_PX, IMAGE_PX, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(buffer, "PNG")
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=AWS["AWS_DEFAULT_REGION"],
                      aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"], aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"])
    s3.create_bucket(Bucket="bench")
    s3.put_object(Bucket="bench", Key="in/page.png", Body=buffer.getvalue())


def _run_with_worker(url: str, env: dict, folder: Path, concurrencies: list[int], seconds: float,
                     baseline: list[dict]) -> list[dict]:
    """The no-worker runs again with one worker consuming the queue (and the backlog the runs before left, so it is
    busy throughout); each row against its no-worker twin."""
    settings = Settings(**{k.removeprefix("IMGRESTORE_").lower(): v for k, v in env.items()
                           if k.startswith("IMGRESTORE_")})
    store = job_store(settings)
    worker: WorkerProcess = start_worker(f"load-{uuid.uuid4().hex[:6]}@bench", env, folder, app=create_app(settings),
                                         ready_timeout=180)
    rows = []
    try:
        # steady state, not start-up: the timed runs begin once the worker has loaded its model and restored a job
        first = store.finished_counts().get("succeeded", 0)
        wait_until(lambda: store.finished_counts().get("succeeded", 0) > first or not worker.alive(), 300,
                   "the worker's first restoration")
        for keys in (False, True):
            for concurrency in concurrencies:
                before = store.finished_counts()
                row = run(url, concurrency, seconds, keys)
                after = store.finished_counts()
                restored = after.get("succeeded", 0) - before.get("succeeded", 0)
                failed = after.get("failed", 0) - before.get("failed", 0)
                if failed:
                    raise RuntimeError(f"{failed} jobs failed in the worker; its log: {worker.log_path}")
                if not worker.alive():
                    raise RuntimeError(f"the worker exited:\n{worker.log()[-3000:]}")
                twin = next(r for r in baseline if r["concurrency"] == concurrency and r["idempotency_keys"] == keys)
                row.update(vs_no_worker=round(row["submissions_per_s"] / twin["submissions_per_s"], 2),
                           restored=restored, restored_per_s=round(restored / seconds, 1))
                rows.append(row)
    finally:
        worker.stop()
    return rows


if __name__ == "__main__":
    main()
