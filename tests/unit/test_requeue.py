"""Re-queuing failed jobs, against a real Redis and no worker: a re-queued job gets its whole retry budget back
(issue 10, bug 2)."""

from __future__ import annotations

import uuid

import pytest

from services.config import Settings
from services.errors import TransientStorageError
from services.job_runner import JobRunner, RetryLater
from services.jobs import Job, JobState, StageTimings, Task
from services.queue.job_store import JobStore

WORKER = "w1@test"


@pytest.fixture()
def config(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, key_prefix=f"rq-{uuid.uuid4().hex[:8]}:",
                    queue_prefix=f"rq{uuid.uuid4().hex[:8]}.", max_retries=2)


@pytest.fixture()
def store(config: Settings):
    store = JobStore.from_url(config.redis_url, config.key_prefix, config.job_ttl_seconds)
    yield store
    keys = list(store.redis.scan_iter(f"{config.key_prefix}*")) + [config.queue_for(t.value) for t in Task]
    store.redis.delete(*keys)


class FlakyStorageRestorer:
    """Every restore meets a transient storage error (an S3 endpoint that keeps timing out)."""

    def restore(self, job: Job, timings: StageTimings | None = None):
        raise TransientStorageError(f"{job.input_url}: store unavailable (503) after retries")


def _queued(store: JobStore) -> Job:
    job = Job(task="denoise", input_url="/in.png", output_url="/out.png")
    store.create(job)
    return job


def test_a_requeued_job_gets_its_whole_retry_budget_back(config, store):
    job = _queued(store)
    runner = JobRunner(config, store, FlakyStorageRestorer())
    for _ in range(config.max_retries):
        assert isinstance(runner.run(job, WORKER), RetryLater)
    failed = runner.run(job, WORKER)
    assert failed["state"] == "failed" and "gave up after 2 retries" in failed["error"]["message"]

    store.requeue(job.id)  # `imgrestore retry` once the store is fixed
    # Before the fix the retry count stayed at 2: this delivery failed at once, "gave up after 2 retries".
    assert isinstance(runner.run(job, WORKER), RetryLater)
    again = store.get(job.id)
    assert again.state is JobState.queued and again.retries == 1
