"""Backfills over a real S3 server with real workers: backpressure, failure report, resume after a kill, scale."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from services.backfill import BackfillPlan
from services.jobs import JobState, Task
from services.queue.batch_store import BatchStore
from services.queue.celery_app import create_app
from services.queue.job_store import JobStore
from tests.integration.conftest import settings_from
from tests.support.processes import REPO, start_worker, wait_until


def _png(seed: int, size: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((size, size)) * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _upload(s3_client, bucket: str, keys_and_bodies, threads: int = 16) -> None:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda kb: s3_client.put_object(Bucket=bucket, Key=kb[0], Body=kb[1]), keys_and_bodies))


def _backfill(env: dict, *args: str, wait: bool = True):
    command = [sys.executable, "-m", "tests.support.cli_with_rss", "backfill", *args]
    process = subprocess.Popen(command, env={**os.environ, **env}, cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    if not wait:
        return process
    out, err = process.communicate(timeout=600)
    return process.returncode, out, err


def _peak_rss(stderr: str) -> float:
    return float(re.findall(r"PEAK_RSS_MB=([\d.]+)", stderr)[-1])


@pytest.fixture()
def env(service_env, tmp_path):
    """A queue prefix of its own per test, so leftover messages never reach another test's workers."""
    return {**service_env, "IMGRESTORE_QUEUE_PREFIX": f"b{uuid.uuid4().hex[:8]}.", "IMGRESTORE_METRICS_PORT": "0"}


@pytest.fixture()
def workers(env, tmp_path):
    from services.queue.celery_app import create_app

    app = create_app(settings_from(env))
    started = [start_worker(f"bf{i}-{uuid.uuid4().hex[:6]}@test", env, tmp_path, app=app) for i in range(2)]
    yield started
    for worker in started:
        worker.stop()


def test_backfill_with_backpressure_and_a_failure_report(env, workers, s3_client, bucket, tmp_path):
    inputs = [(f"scans/{i // 10}/p{i:03d}.png", _png(i)) for i in range(40)]
    inputs += [("scans/broken-1.png", b"\x89PNG\r\n\x1a\nnope"), ("scans/broken-2.jpg", b"<html>502</html>"),
               ("scans/notes.txt", b"not included")]
    _upload(s3_client, bucket, inputs)
    settings = settings_from(env)
    plan = BackfillPlan(task=Task.denoise, source=f"s3://{bucket}/scans/", output=f"s3://{bucket}/clean/")
    batches = BatchStore(__import__("services.queue.job_store", fromlist=["JobStore"]).JobStore.from_url(
        settings.redis_url, settings.key_prefix))

    peak_in_flight = []
    stop = threading.Event()

    def watch() -> None:  # samples the backfill's unfinished jobs while it runs
        while not stop.is_set():
            try:
                batch = batches.get(plan.backfill_id)
                peak_in_flight.append(batch.total - batch.done)
            except Exception:
                pass
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    report = tmp_path / "failures.jsonl"
    code, out, err = _backfill(env, "--task", "denoise", f"s3://{bucket}/scans/", "--output",
                               f"s3://{bucket}/clean/", "--max-in-flight", "4", "--report", str(report))
    stop.set()
    watcher.join()

    assert code == 1, err  # two inputs failed
    assert max(peak_in_flight) <= 4 and max(peak_in_flight) >= 2
    failures = [json.loads(line) for line in report.read_text().splitlines()]
    assert sorted(f["input"].rsplit("/", 1)[1] for f in failures) == ["broken-1.png", "broken-2.jpg"]
    assert {f["type"] for f in failures} == {"image_decode"}
    written = {o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket, Prefix="clean/")["Contents"]}
    assert written == {f"clean/{i // 10}/p{i:03d}.png" for i in range(40)}
    assert "40 succeeded" in err and "2 failed" in err


def test_killed_backfill_resumes_with_nothing_twice_and_nothing_skipped(env, workers, s3_client, bucket, store,
                                                                        tmp_path):
    count = 150
    _upload(s3_client, bucket, [(f"in/{i:04d}.png", _png(i, 32)) for i in range(count)])
    plan = BackfillPlan(task=Task.watermark, source=f"s3://{bucket}/in/", output=f"s3://{bucket}/out/")
    batches = BatchStore(store)
    args = ["--task", "watermark", f"s3://{bucket}/in/", "--output", f"s3://{bucket}/out/", "--max-in-flight", "10",
            "--report", str(tmp_path / "failures.jsonl")]

    first = _backfill(env, *args, wait=False)
    wait_until(lambda: batches.get(plan.backfill_id).done >= 30, 120, "30 jobs of the first run to finish")
    os.killpg(first.pid, signal.SIGKILL)  # no chance to clean up: like a crashed laptop
    first.wait(10)
    interrupted = batches.get(plan.backfill_id)
    assert 30 <= interrupted.done < count and not interrupted.sealed

    again = _backfill(env, *args)  # without --resume: refused, nothing touched
    assert again[0] == 2 and "--resume" in again[2]
    code, _, err = _backfill(env, *args, "--resume")
    assert code == 0, err

    final = batches.get(plan.backfill_id)
    assert (final.total, final.succeeded, final.failed) == (count, count, 0)
    jobs = [store.get(job_id) for job_id in batches.job_ids(plan.backfill_id)]
    assert len(jobs) == count and len({j.input_url for j in jobs}) == count  # each input exactly one job
    assert all(j.state is JobState.succeeded and j.attempts == 1 for j in jobs)  # none processed twice
    written = s3_client.list_objects_v2(Bucket=bucket, Prefix="out/")["KeyCount"]
    assert written == count  # none skipped
    print(f"resume: killed after {interrupted.done}/{count} done ({interrupted.total} queued); resumed to "
          f"{final.succeeded}/{count}, every job attempts == 1")


def test_listing_20000_objects_keeps_memory_flat(env, s3_client, bucket, record_property):
    """Detached backfills of 2 000 and 20 000 keys (no workers): peak RSS must not grow with the key count."""
    _upload(s3_client, bucket, [(f"small/{i:06d}.png", b"x") for i in range(2_000)])
    _upload(s3_client, bucket, [(f"large/{i:06d}.png", b"x") for i in range(20_000)], threads=32)
    figures = {}
    for name, count in (("small", 2_000), ("large", 20_000)):
        started = time.monotonic()
        code, _, err = _backfill(env, "--task", "denoise", f"s3://{bucket}/{name}/", "--output",
                                 f"s3://{bucket}/{name}-out/", "--detach", "--max-in-flight", "100000")
        seconds = time.monotonic() - started
        assert code == 0, err
        assert f"queued {count:,} jobs" in err
        figures[name] = {"keys": count, "seconds": round(seconds, 2), "peak_rss_mb": _peak_rss(err)}
    growth = figures["large"]["peak_rss_mb"] - figures["small"]["peak_rss_mb"]
    record_property("backfill_listing", figures)
    print(f"backfill listing figures: {figures}; RSS growth 2k→20k keys: {growth:.1f} MiB")
    assert growth < 15, figures


def test_resumed_backfill_never_waits_on_a_job_nobody_holds(env, s3_client, bucket, tmp_path):
    """Issue 15's stuck backfill: one job left ``running`` with no lease and no message (its worker's delivery gone).
    The workers here sweep too rarely to matter; the waiting backfill's own sweep re-queues the orphan."""
    fast = {**env, "IMGRESTORE_VISIBILITY_TIMEOUT": "2", "IMGRESTORE_LEASE_RENEW_INTERVAL": "0.5",
            "IMGRESTORE_UNACKED_RESTORE_INTERVAL": "1", "IMGRESTORE_ORPHAN_SWEEP_INTERVAL": "1",
            "IMGRESTORE_KEY_PREFIX": f"bfo{uuid.uuid4().hex[:6]}:"}
    settings = settings_from(fast)
    store = JobStore.from_url(settings.redis_url, settings.key_prefix)
    _upload(s3_client, bucket, [(f"o/{i}.png", _png(i, 32)) for i in range(6)])
    args = ["--task", "denoise", f"s3://{bucket}/o/", "--output", f"s3://{bucket}/o-out/",
            "--report", str(tmp_path / "f.jsonl")]
    code, _, err = _backfill(fast, *args, "--detach")  # queued, no worker yet
    assert code == 0, err
    plan = BackfillPlan(task=Task.denoise, source=f"s3://{bucket}/o/", output=f"s3://{bucket}/o-out/")
    victim = BatchStore(store).job_ids(plan.backfill_id)[2]
    queue = settings.queue_for("denoise")
    (raw,) = [m for m in store.redis.lrange(queue, 0, -1) if json.loads(m)["headers"]["id"] == victim]
    store.redis.lrem(queue, 1, raw)  # its message is gone…
    store.start(victim, "gone@test", 1)  # …and it is "running" on a worker that holds nothing

    app = create_app(settings)
    worker = start_worker(f"orph-{uuid.uuid4().hex[:6]}@test", {**fast, "IMGRESTORE_ORPHAN_SWEEP_INTERVAL": "600"},
                          tmp_path, app=app)
    try:
        process = _backfill(fast, *args, "--resume", wait=False)
        try:
            _, err = process.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError(f"backfill --resume still waiting: {store.get(victim)}")
        assert process.returncode == 0, err
    finally:
        worker.stop()
    record = store.get(victim)
    assert record.state is JobState.succeeded and (record.orphaned, record.lost) == (1, 0)
    assert BatchStore(store).get(plan.backfill_id).succeeded == 6
