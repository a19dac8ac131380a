"""Issue 13, first hour: what a new user met in `run` and `backfill`, through the real command."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.processes import REPO


def _png(seed: int, size: int = 24) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((size, size)) * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _cli(env: dict, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    # PYTHONPATH: this checkout's code, whatever the current folder (the test runs in a temporary one).
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env},
                          capture_output=True, text=True, timeout=300)


def test_embedded_backfill_summary_adds_up_and_leaves_no_empty_failure_report(tmp_path, tiny_model_dir):
    env = {"IMGRESTORE_MODEL_DIR": str(tiny_model_dir), "IMGRESTORE_INTRA_OP_THREADS": "1"}
    scans, clean = tmp_path / "scans", tmp_path / "clean"
    scans.mkdir()
    for i in range(3):
        (scans / f"p{i}.png").write_bytes(_png(i))
    first = _cli(env, tmp_path, "backfill", "--task", "denoise", str(scans), "--output", str(clean))
    assert first.returncode == 0, first.stderr
    assert "3 inputs, 3 succeeded, 0 failed;" in " ".join(first.stderr.split()), first.stderr
    assert not list(tmp_path.glob("backfill-*-failures.jsonl"))  # before: an empty one in the current folder

    for i in range(3, 5):
        (scans / f"p{i}.png").write_bytes(_png(i))
    (scans / "broken.png").write_bytes(b"not a png")
    again = _cli(env, tmp_path, "backfill", "--task", "denoise", str(scans), "--output", str(clean), "--resume")
    assert again.returncode == 1, again.stderr
    text = " ".join(again.stderr.split())
    # before: "5 succeeded, 1 failed, 3 skipped as already handled" (read as 9 items)
    assert "6 inputs, 5 succeeded, 1 failed (3 of them handled by an earlier run)" in text, again.stderr
    (report,) = tmp_path.glob("backfill-*-failures.jsonl")
    assert "broken.png" in report.read_text()


def test_dry_run_sizes_its_threads_to_the_connection_pool(service_env, s3_client, bucket, tmp_path):
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: s3_client.put_object(Bucket=bucket, Key=f"in/{i:03d}.png", Body=_png(i)),
                      range(120)))
    env = {**service_env, "IMGRESTORE_S3_MAX_POOL_CONNECTIONS": "10"}  # boto's default pool, as before the fix
    result = _cli(env, tmp_path, "backfill", "--task", "denoise", f"s3://{bucket}/in/", "--output",
                  f"s3://{bucket}/out/", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 120
    assert "Connection pool is full" not in result.stderr, result.stderr[-2000:]  # before: one warning per extra thread
    assert "120 inputs" in result.stderr


def test_run_summary_names_the_output_folder(tmp_path, tiny_model_dir):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(_png(1))
    result = _cli({"IMGRESTORE_MODEL_DIR": str(tiny_model_dir)}, tmp_path, "run", "--task", "denoise", "in",
                  "-o", "restored")
    assert result.returncode == 0, result.stderr
    assert f"outputs under {tmp_path / 'restored'}" in result.stderr, result.stderr  # before: "the folder given"


@pytest.fixture
def private_redis(tmp_path):
    """A Redis of its own: kombu keeps one control binding per worker in the database, and workers that other tests
    SIGKILLed leave theirs behind (then an inspection rightly waits its whole timeout). Requested before
    ``make_service``, so it stops after the workers."""
    from tests.support.chaos import RedisServer

    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def test_monitor_snapshot_has_throughput_and_does_not_wait_out_its_timeout(private_redis, make_service, s3_client,
                                                                          bucket, tmp_path):
    from services.jobs import JobRequest
    from services.monitoring import Monitor

    service = make_service(workers=1, IMGRESTORE_REDIS_URL=private_redis.url)
    s3_client.put_object(Bucket=bucket, Key="in/a.png", Body=_png(1, 100))
    jobs = [service.submitter.submit(JobRequest(task="watermark", input_url=f"s3://{bucket}/in/a.png",
                                                output_url=f"s3://{bucket}/out/{i}.png")) for i in range(3)]
    jobs.append(service.submitter.submit(JobRequest(task="denoise", input_url=f"s3://{bucket}/in/none.png")))
    for job in jobs:
        service.submitter.wait(job.id, timeout=120)

    monitor = Monitor(service.settings, service.store, service.app)
    assert monitor.expected_workers() == 1
    snapshot = monitor.snapshot(worker_timeout=8.0, window=120)
    assert [w.name for w in snapshot.workers] == [service.workers[0].name]
    # Before: two broadcasts each waited their whole timeout, one after the other (≥ 16 s here; 2.9 s with the CLI's
    # 1 s default). Now it ends at the worker's reply (well under a second on an idle machine; the bound leaves room
    # for a loaded CI box, where a niced worker can take seconds to answer).
    assert snapshot.seconds < 8.0, snapshot.seconds
    rates = snapshot.throughput
    watermark, denoise = rates[service.settings.queue_for("watermark")], rates[service.settings.queue_for("denoise")]
    assert (watermark.succeeded, watermark.failed, denoise.failed) == (3, 0, 1)
    assert watermark.megapixels == 0.03 and watermark.jobs_per_s == round(3 / 120, 3)
    assert watermark.megapixels_per_s == round(0.03 / 120, 3)

    result = _cli(service.env, tmp_path, "monitor", "--once", "--json", "--window", "120", "--worker-timeout", "8")
    assert result.returncode == 0, result.stderr
    data = __import__("json").loads(result.stdout)
    assert data["throughput"][service.settings.queue_for("watermark")]["succeeded"] == 3
    assert data["seconds"] < 8.0, data["seconds"]  # ended by the one reply, not the timeout
    print(f"monitor snapshot: {snapshot.seconds} s in-process, {data['seconds']} s in the CLI (timeout 8 s)")
    plain = _cli(service.env, tmp_path, "monitor", "--once", "--window", "120")
    assert "jobs/s" in plain.stdout and "over the last 2 min" in plain.stdout and "throughput –" not in plain.stdout
