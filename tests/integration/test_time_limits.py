"""Per-job time limits with a real worker and Redis (issue 11, finding 9): a job past its soft limit (its input
arrives late) fails with ``time_limit_exceeded`` and writes nothing while the next job succeeds on the same worker;
a job stuck where no check comes (its input never arrives) passes its hard limit, is recorded failed, and its pool
process is replaced."""

from __future__ import annotations

import io
import os
import threading
import time

import numpy as np
from PIL import Image

from services.jobs import JobRequest, JobState
from tests.support.processes import wait_until

# Limits far below what the shipped defaults give (60 s + 10 s/MP): tiny images finish well within 3 s even on a
# loaded machine, while a 9 MP page cannot (decode + tiled inference of 9 MP). Per-megapixel 0: the base decides.
TIGHT = {"IMGRESTORE_JOB_TIME_LIMIT_BASE": "3", "IMGRESTORE_JOB_TIME_LIMIT_PER_MEGAPIXEL": "0"}
FAST_REDELIVERY = {"IMGRESTORE_VISIBILITY_TIMEOUT": "4", "IMGRESTORE_LEASE_TTL": "3",
                   "IMGRESTORE_LEASE_RENEW_INTERVAL": "0.5", "IMGRESTORE_UNACKED_RESTORE_INTERVAL": "1"}


def _png(side: int, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    page = np.random.default_rng(seed).integers(200, 256, (side, side), dtype=np.uint8)
    Image.fromarray(page).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def _slow_input(path, data: bytes, delay: float) -> None:
    """``path`` becomes a FIFO whose reader gets ``data`` only ``delay`` seconds after it opens it: a download that
    takes that long whatever the machine's speed (a slow store)."""
    os.mkfifo(path)

    def feed() -> None:
        with open(path, "wb") as fifo:  # returns once the worker opens it for reading
            time.sleep(delay)
            fifo.write(data)

    threading.Thread(target=feed, daemon=True).start()


def test_a_job_past_its_soft_limit_fails_with_the_reason_and_the_next_job_succeeds(make_service, tmp_path):
    # The input arrives 4.5 s after the download starts, past the 3 s limit on any machine (a 9 MP page was not:
    # the test model restores it within 3 s on a quiet one); the soft limit is checked once the download is done.
    # The grace is long: this test is about the soft limit.
    service = make_service(1, **TIGHT, IMGRESTORE_JOB_TIME_LIMIT_HARD_GRACE="120")
    _slow_input(tmp_path / "slow.png", _png(256), delay=4.5)
    (tmp_path / "small.png").write_bytes(_png(64, seed=1))
    slow = service.submitter.submit(JobRequest(task="denoise", profile="document", input_url=str(tmp_path / "slow.png"),
                                               output_url=str(tmp_path / "out-slow.png")))
    quick = service.submitter.submit(JobRequest(task="denoise", profile="document",
                                                input_url=str(tmp_path / "small.png"),
                                                output_url=str(tmp_path / "out-small.png")))
    failed = service.submitter.wait(slow.id, timeout=120)
    assert failed.state is JobState.failed, failed
    assert failed.error.type == "time_limit_exceeded" and not failed.error.transient
    assert "over its time limit of 3.0 s" in failed.error.message
    assert (failed.attempts, failed.retries, failed.lost) == (1, 0, 0)  # acknowledged once, never retried
    assert slow.id in service.store.dead_letters()
    done = service.submitter.wait(quick.id, timeout=60)
    assert done.state is JobState.succeeded, done.error
    assert not (tmp_path / "out-slow.png").exists() and (tmp_path / "out-small.png").exists()  # the failed job wrote nothing
    assert service.workers[0].alive()


def test_a_job_stuck_past_its_hard_limit_is_failed_and_its_pool_process_replaced(make_service, tmp_path):
    service = make_service(1, **TIGHT, **FAST_REDELIVERY, IMGRESTORE_JOB_TIME_LIMIT_HARD_GRACE="1")
    worker = service.workers[0]
    fifo = tmp_path / "never-arrives.png"
    os.mkfifo(fifo)  # reading it blocks in the download: no check ever runs
    stuck = service.submitter.submit(JobRequest(task="denoise", input_url=str(fifo),
                                                output_url=str(tmp_path / "never.png")))
    wait_until(lambda: service.store.get(stuck.id).state is JobState.running, 60, "the stuck job to start")
    (first_process,) = worker.pool_pids()
    failed = service.submitter.wait(stuck.id, timeout=60)
    assert failed.state is JobState.failed and failed.error.type == "time_limit_exceeded"
    assert "hard limit" in failed.error.message and "worker process was replaced" in failed.error.message
    wait_until(lambda: worker.pool_pids() not in ([], [first_process]), 60, "a new pool process")
    assert worker.alive()

    (tmp_path / "ok.png").write_bytes(_png(64, seed=2))
    after = service.submitter.submit(JobRequest(task="denoise", input_url=str(tmp_path / "ok.png"),
                                                output_url=str(tmp_path / "ok-out.png")))
    assert service.submitter.wait(after.id, timeout=60).state is JobState.succeeded
    time.sleep(1.0)  # the stuck job's message came back when its process died: dropped as a finished job's
    final = service.store.get(stuck.id)
    assert final.state is JobState.failed and final.error.type == "time_limit_exceeded"
    assert not (tmp_path / "never.png").exists()
