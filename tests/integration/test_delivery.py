"""The delivery contract: retries with backoff for transient errors; a slow job is never delivered twice."""

from __future__ import annotations

import io
import os
import threading
import time

import numpy as np
from PIL import Image

from services.jobs import JobRequest, JobState


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_transient_storage_errors_are_retried_with_backoff_then_fail_with_the_reason(make_service, tmp_path):
    submitter = make_service(
        IMGRESTORE_S3_ENDPOINT_URL="http://127.0.0.1:9",  # nothing listens there
        IMGRESTORE_S3_MAX_ATTEMPTS="1", IMGRESTORE_S3_CONNECT_TIMEOUT="0.3",
        IMGRESTORE_MAX_RETRIES="2", IMGRESTORE_RETRY_BACKOFF_BASE="0.3",
    ).submitter
    started = time.monotonic()
    job = submitter.submit(JobRequest(task="denoise", input_url="s3://bucket/x.png"))
    final = submitter.wait(job.id, timeout=90)
    assert final.state is JobState.failed
    assert final.error.type == "storage_unavailable" and final.error.transient
    assert "gave up after 2 retries" in final.error.message
    assert (final.attempts, final.retries) == (3, 2)
    assert time.monotonic() - started >= 0.3 * 0.5 + 0.6 * 0.5  # the backoff (with jitter ≥ ½) was waited


def test_a_slow_job_keeps_its_lease_and_is_not_delivered_twice(make_service, tmp_path):
    # The input is a named pipe: the job blocks in `download` until the test writes the image, for 4× the
    # visibility timeout and 6× the lease TTL. Without lease renewal the broker would hand it to the second worker
    # after ~3 s; without its claims, the second worker's keeper would reclaim it after ~2 s.
    service = make_service(2, IMGRESTORE_VISIBILITY_TIMEOUT="3", IMGRESTORE_LEASE_TTL="2",
                           IMGRESTORE_LEASE_RENEW_INTERVAL="0.5", IMGRESTORE_UNACKED_RESTORE_INTERVAL="1")
    submitter, workers = service.submitter, service.workers
    fifo = tmp_path / "slow.png"
    os.mkfifo(fifo)
    job = submitter.submit(JobRequest(task="denoise", input_url=str(fifo), output_url=str(tmp_path / "out.png")))
    time.sleep(12)
    record = submitter.store.get(job.id)
    assert record.state is JobState.running and record.attempts == 1

    writer = threading.Thread(target=lambda: fifo.write_bytes(_png()))
    writer.start()
    final = submitter.wait(job.id, timeout=60)
    writer.join(5)
    assert final.state is JobState.succeeded and final.attempts == 1 and final.lost == 0
    mentions = [w.name for w in workers if job.id in w.log()]
    assert mentions == [final.worker], f"job seen by {mentions}, ran on {final.worker}"
