"""Issue 15's combined fault run, bounded for the suite (``bench/chaos.py`` is the long, seeded version): a real
backfill on two real workers while a worker is SIGKILLed, Redis is SIGKILLed mid-job and stays down 10 s before
restarting on its AOF, another worker is SIGKILLed and 10 % of the workers' S3 requests fail. Nothing may be lost,
left unfinished or counted twice."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.support.chaos import ChaosRun, Fault, upload_pages

pytestmark = pytest.mark.slow

PAGES = 240
FAULTS = [Fault(3.0, "kill_worker", 1.0), Fault(6.0, "redis_outage", 10.0), Fault(18.0, "kill_worker", 1.5)]


def test_faults_together_lose_nothing_stall_nothing_and_count_each_job_once(s3_endpoint: str, aws_env: dict,
                                                                              tiny_model_dir: Path, tmp_path: Path):
    bucket = f"chaos-{uuid.uuid4().hex[:10]}"
    upload_pages(s3_endpoint, bucket, "in/", PAGES)
    run = ChaosRun(tmp_path, s3_endpoint, tiny_model_dir, bucket, "in/", PAGES, seed=15)
    started = time.monotonic()
    result = run.run(FAULTS, timeout=200)
    seconds = time.monotonic() - started
    print(f"bounded chaos: {result.succeeded}/{PAGES} succeeded in {result.seconds:.0f} s; lost deliveries "
          f"{result.lost_deliveries}, interrupted {result.interrupted}, S3 faults {result.s3_faults}")
    events = "\n".join(run.log)
    assert "run over before" not in events, f"the backfill ended before every fault was injected:\n{events}"
    assert (result.lost, result.stuck, result.counted_twice) == (0, 0, 0), (result.unfinished, events)
    assert (result.succeeded, result.failed, result.outputs) == (PAGES, 0, PAGES), result
    assert result.backfill_exit == 0
    assert result.interrupted >= 1, "the Redis outage hit no running job"
    assert sum(result.s3_faults.values()) > 0
    assert seconds < 240
