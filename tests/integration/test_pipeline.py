"""A pipelined worker (issue 12: three pool processes, one model slot) against real Redis and a real worker: its
stages overlap without changing what a job's delivery means. A job stuck in its download holds up no other job; a
pool process killed mid-pipeline loses no job (its job is delivered again, the others go on); a warm shutdown finishes
what is running and leaves the rest queued for the next worker. Inputs are local files, and a FIFO for a job that
must stay in its download until the test feeds it."""

from __future__ import annotations

import io
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.jobs import JobRequest, JobState
from tests.support.processes import wait_until

PIPELINED = {"IMGRESTORE_MODEL_SLOTS": "1", "IMGRESTORE_VISIBILITY_TIMEOUT": "4", "IMGRESTORE_LEASE_TTL": "3",
             "IMGRESTORE_LEASE_RENEW_INTERVAL": "0.5", "IMGRESTORE_UNACKED_RESTORE_INTERVAL": "1"}


def _png(seed: int, size: int = 96) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((size, size)) * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _feed(fifo: Path, data: bytes) -> threading.Thread:
    thread = threading.Thread(target=lambda: fifo.write_bytes(data), daemon=True)
    thread.start()
    return thread


def _submit_files(service, folder: Path, count: int, first_seed: int = 100) -> list:
    jobs = []
    for i in range(count):
        path = folder / f"page-{first_seed + i}.png"
        path.write_bytes(_png(first_seed + i))
        jobs.append(service.submitter.submit(JobRequest(task="denoise", profile="document", input_url=str(path),
                                                        output_url=str(folder / f"out-{first_seed + i}.png"))))
    return jobs


def _stuck_job(service, tmp_path: Path):
    """A job whose download blocks on a FIFO until the test writes it; returned once it runs."""
    fifo = tmp_path / "slow-download.png"
    os.mkfifo(fifo)
    job = service.submitter.submit(JobRequest(task="denoise", profile="document", input_url=str(fifo),
                                              output_url=str(tmp_path / "slow-out.png")))
    wait_until(lambda: service.store.get(job.id).state is JobState.running, 60, "the stuck job to start")
    return job, fifo


def _pool_process_running(store, job_id: str) -> int:
    """The pool process holding ``job_id``'s lease (``<node>:<pid>:<token>:<thread>``)."""
    return int(store.redis.get(store.lease_key(job_id)).rsplit(":", 3)[1])


@pytest.fixture()
def pipelined(make_service):
    return make_service(1, concurrency=3, **PIPELINED)


def test_a_job_stuck_in_its_download_holds_up_no_other(pipelined, tmp_path):
    stuck, fifo = _stuck_job(pipelined, tmp_path)
    others = _submit_files(pipelined, tmp_path, 6)

    finished = [pipelined.submitter.wait(job.id, timeout=120) for job in others]
    assert all(job.state is JobState.succeeded for job in finished), [j.error for j in finished]
    assert all(job.timings.model_wait is not None for job in finished)  # each took its turn at the model slot
    assert all(job.worker == pipelined.workers[0].name for job in finished)
    assert pipelined.store.get(stuck.id).state is JobState.running  # still downloading all along

    _feed(fifo, _png(1))
    final = pipelined.submitter.wait(stuck.id, timeout=60)
    assert final.state is JobState.succeeded and final.attempts == 1


def test_a_pool_process_killed_mid_pipeline_loses_no_job(pipelined, tmp_path):
    stuck, fifo = _stuck_job(pipelined, tmp_path)
    victim = _pool_process_running(pipelined.store, stuck.id)
    others = _submit_files(pipelined, tmp_path, 4)
    os.kill(victim, signal.SIGKILL)  # as the OOM killer would, while its siblings are in other stages

    wait_until(lambda: pipelined.store.get(stuck.id).attempts == 2, 60, "the killed job to be delivered again")
    _feed(fifo, _png(2))
    final = pipelined.submitter.wait(stuck.id, timeout=60)
    assert final.state is JobState.succeeded and (final.attempts, final.lost) == (2, 1)
    finished = [pipelined.submitter.wait(job.id, timeout=120) for job in others]
    assert all(job.state is JobState.succeeded for job in finished), [j.error for j in finished]
    assert all(job.lost == 0 for job in finished)  # only the killed process's job was lost
    assert pipelined.workers[0].alive()


def test_a_warm_shutdown_finishes_what_runs_and_leaves_the_rest_queued(pipelined, tmp_path):
    worker = pipelined.workers[0]
    stuck, fifo = _stuck_job(pipelined, tmp_path)
    os.kill(worker.pid, signal.SIGTERM)  # what Kubernetes sends
    later = _submit_files(pipelined, tmp_path, 5)
    _feed(fifo, _png(3))

    final = pipelined.submitter.wait(stuck.id, timeout=60)
    assert final.state is JobState.succeeded and final.attempts == 1
    worker.process.wait(60)
    assert worker.process.returncode == 0
    states = [pipelined.store.get(job.id) for job in later]
    assert all(j.state in (JobState.succeeded, JobState.queued) and j.lost == 0 for j in states), states

    pipelined.start_worker(concurrency=3)
    finished = [pipelined.submitter.wait(job.id, timeout=120) for job in later]
    assert all(job.state is JobState.succeeded and job.lost == 0 for job in finished), [j.error for j in finished]
