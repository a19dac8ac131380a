"""Submissions per second through one ``imgrestore api`` process (uvicorn, real HTTP, keep-alive clients) at
concurrency 1, 8 and 32, with and without Idempotency-Keys; no worker, a redis-server of its own; against the
Redis-only ceiling (one client's LPUSH rate) measured in the same run.
Usage: python bench/api_load.py [--seconds 5] [--concurrency 1,8,32]"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from common import lpush_ceiling, markdown_table, write_results  # noqa: E402

from tests.support.api_server import start_api  # noqa: E402
from tests.support.chaos import RedisServer  # noqa: E402

TOKEN = "bench-" + uuid.uuid4().hex


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
                                     json={"task": "denoise", "input_url": "s3://bench/in/page.png"})
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
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="imgrestore-load-"))
    redis_server = RedisServer(folder / "redis", options=("--appendonly", "no"))
    redis_server.start()
    env = {"IMGRESTORE_REDIS_URL": redis_server.url, "IMGRESTORE_METRICS_PORT": "0", "IMGRESTORE_LOG_LEVEL": "WARNING",
           "IMGRESTORE_MAX_QUEUED_JOBS": "0",
           # capacity, not policy: one bench token submits far more than a token's quotas allow
           "IMGRESTORE_API_SUBMISSIONS_PER_MINUTE_PER_TOKEN": "0", "IMGRESTORE_API_MAX_UNFINISHED_JOBS_PER_TOKEN": "0",
           "IMGRESTORE_API_TOKENS": json.dumps({TOKEN: {"name": "bench", "allow": ["s3://bench/"]}})}
    api = start_api(env, folder)
    try:
        with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as http:
            for _ in range(20):  # warm-up: connections, scripts (a timed warm-up may finish nothing on a busy box)
                http.post("/v1/jobs", json={"task": "denoise", "input_url": "s3://bench/in/page.png"})
        rows = [run(api.url, c, args.seconds, keys) for keys in (False, True)
                for c in map(int, args.concurrency.split(","))]
        ceiling = lpush_ceiling(redis_server.url)
        for row in rows:
            row["vs_lpush"] = round(row["submissions_per_s"] / ceiling["lpush_per_s"], 3)
    finally:
        api.stop()
        redis_server.stop()
    print(markdown_table(rows))
    write_results(args.name, "Submissions through one API process", {"rows": rows, "redis_ceiling": ceiling}, [
        ("POST /v1/jobs, keep-alive clients, no worker (the API and the clients share the machine); `vs_lpush`: "
         f"against one client's LPUSH rate, {ceiling['lpush_per_s']}/s, same run", markdown_table(rows))])


if __name__ == "__main__":
    main()
