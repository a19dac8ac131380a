"""Backfill at scale: S3 objects listed per second, jobs enqueued per second and the CLI's peak RSS for 2 000 and
20 000 keys (a detached backfill: listing + queueing only, no workers), against moto's S3 server and Redis, and the
Redis-only ceiling (LPUSH rate, one command per round trip and pipelined) measured in the same run.
Usage: python bench/backfill_scale.py [--keys 2000,20000]"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3

from common import REPO, lpush_ceiling, markdown_table, redis_url, write_results  # noqa: E402

from services.config import Settings  # noqa: E402
from services.storage import S3Storage  # noqa: E402
from tests.support.processes import start_moto  # noqa: E402

AWS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", default="2000,20000")
    args = parser.parse_args()
    os.environ.update(AWS)
    moto = start_moto(Path(tempfile.mkdtemp(prefix="imgrestore-bench-")))
    rows = []
    try:
        s3 = boto3.client("s3", endpoint_url=moto.endpoint)
        s3.create_bucket(Bucket="bench")
        storage = S3Storage(Settings(s3_endpoint_url=moto.endpoint))
        for count in (int(k) for k in args.keys.split(",")):
            prefix = f"k{count}/"
            with ThreadPoolExecutor(32) as pool:
                list(pool.map(lambda i: s3.put_object(Bucket="bench", Key=f"{prefix}{i:07d}.png", Body=b"x"),
                              range(count)))
            started = time.perf_counter()
            listed = sum(1 for _ in storage.list(f"s3://bench/{prefix}"))
            list_s = time.perf_counter() - started
            env = {**os.environ, "IMGRESTORE_REDIS_URL": redis_url(), "IMGRESTORE_S3_ENDPOINT_URL": moto.endpoint,
                   "IMGRESTORE_QUEUE_PREFIX": f"bench{uuid.uuid4().hex[:6]}."}
            started = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", "tests.support.cli_with_rss", "backfill", "--task",
                                     "denoise", f"s3://bench/{prefix}", "--output", f"s3://bench/out-{prefix}",
                                     "--detach", "--max-in-flight", str(count * 2)],
                                    cwd=REPO, env=env, capture_output=True, text=True)
            backfill_s = time.perf_counter() - started
            assert result.returncode == 0, result.stderr
            rss = float(re.findall(r"PEAK_RSS_MB=([\d.]+)", result.stderr)[-1])
            ceiling = lpush_ceiling(env["IMGRESTORE_REDIS_URL"])
            rows.append({"keys": listed, "listed_per_s": round(listed / list_s), "backfill_seconds": round(backfill_s, 1),
                         "enqueued_per_s": round(count / backfill_s), "peak_rss_mb": rss, **ceiling,
                         "vs_lpush_pipelined": round(count / backfill_s / ceiling["lpush_pipelined_per_s"], 3)})
            print(rows[-1], flush=True)
    finally:
        moto.stop()
    growth = rows[-1]["peak_rss_mb"] - rows[0]["peak_rss_mb"]
    write_results("backfill_scale", "Backfill at scale (listing and queueing)", {"runs": rows,
                  "rss_growth_mb": round(growth, 1)},
                  [("Detached backfill, moto S3 server + local Redis", markdown_table(rows)
                    + f"\n\nPeak RSS grows by {growth:.1f} MiB from the smallest to the largest listing: the listing is "
                      "paged and nothing is kept per key in the process (membership lives in Redis).")])


if __name__ == "__main__":
    sys.exit(main())
