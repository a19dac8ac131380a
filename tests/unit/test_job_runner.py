"""Every branch of one delivery (``JobRunner.run``) in-process against a real Redis, with a stub restorer: first run,
duplicate, leased elsewhere, redelivery after a lost worker, the lost-delivery limit, transient retry, giving up,
permanent failure, and an outage mid-job. Each test checks what the delivery left behind — the record, the lease, the
dead-letter set, the metrics, the webhooks owed — and runs in milliseconds."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY

from services.config import Settings
from services.errors import ImageDecodeError, TransientStorageError
from services.job_runner import JobRunner, RetryLater
from services.jobs import Job, JobState, OutputInfo, RestoreOutcome, StageTimings
from services.queue.job_store import JobStore
from services.webhooks import Notification

WORKER = "w1@test"


class StubRestorer:
    """Stands in for ``Restorer``: does what ``outcome`` says (returns or raises) and counts its calls."""

    def __init__(self, outcome: Callable[[Job], RestoreOutcome] | Exception | None = None) -> None:
        self.outcome = outcome
        self.calls: list[str] = []

    def restore(self, job: Job, timings: StageTimings | None = None) -> RestoreOutcome:
        self.calls.append(job.id)
        if isinstance(self.outcome, Exception):
            raise self.outcome
        if timings is not None:
            timings.infer = 0.25
        result = OutputInfo(width=4, height=3, mode="RGB", format="PNG", bytes=99, megapixels=0.5, model="stub/m1",
                            tiles=1)
        return RestoreOutcome(result=result, timings=timings or StageTimings(infer=0.25), provider="StubProvider")


@pytest.fixture()
def store(redis_url: str) -> JobStore:
    return JobStore.from_url(redis_url, f"runner-{uuid.uuid4().hex[:8]}:")


def _runner(store: JobStore, restorer: StubRestorer, notes: list[Notification] | None = None,
            **settings: object) -> JobRunner:
    config = Settings(redis_url="redis://unused", key_prefix=store.prefix, lease_ttl=30, lease_renew_interval=3,
                      **settings)
    return JobRunner(config, store, restorer, notify=None if notes is None else notes.append)


def _job(store: JobStore, **fields: object) -> Job:
    job = Job(**{"task": "denoise", "input_url": "/in/a.png", "output_url": "/out/a.png", **fields})
    store.create(job)
    return job


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _lease_lapses(store: JobStore, job: Job) -> None:
    """What a dead worker's lease does after the lease TTL, without waiting for it."""
    store.redis.delete(store.lease_key(job.id))


def test_a_first_delivery_runs_the_job_and_records_its_success(store):
    restorer, notes = StubRestorer(), []
    job = _job(store, callback_url="https://hooks.example/done")
    succeeded = _sample("imgrestore_jobs_total", task="denoise", state="succeeded")

    outcome = _runner(store, restorer, notes).run(job, WORKER)

    assert outcome == {"id": job.id, "state": "succeeded", "output_url": "/out/a.png"}
    final = store.get(job.id)
    assert final.state is JobState.succeeded and (final.attempts, final.lost, final.retries) == (1, 0, 0)
    assert final.worker == WORKER and final.provider == "StubProvider" and final.result.model == "stub/m1"
    assert final.timings.infer == 0.25 and final.finished_at is not None
    assert restorer.calls == [job.id]
    assert not store.redis.exists(store.lease_key(job.id))  # released at the end, not left to lapse
    assert store.ids_in_state(JobState.succeeded, 0, -1) == [job.id]
    assert _sample("imgrestore_jobs_total", task="denoise", state="succeeded") == succeeded + 1
    assert [(n.event, n.url, n.payload["state"]) for n in notes] == [
        ("job.finished", "https://hooks.example/done", "succeeded")]


def test_a_duplicate_delivery_of_a_finished_job_changes_nothing(store):
    job = _job(store)
    _runner(store, StubRestorer()).run(job, WORKER)
    before = store.get(job.id)
    again, notes = StubRestorer(), []

    outcome = _runner(store, again, notes).run(job, "w2@test")

    assert outcome == {"id": job.id, "state": "succeeded", "duplicate": True}
    assert again.calls == [] and notes == []
    assert store.get(job.id) == before  # attempts, worker, finish time: all as the first delivery left them
    assert store.finished_counts() == {"succeeded": 1}


def test_a_job_leased_by_another_live_worker_is_retried_after_a_lease_ttl(store):
    job = _job(store)
    assert store.start(job.id, "w2@test", 30_000).status == "started"
    restorer = StubRestorer()

    outcome = _runner(store, restorer).run(job, WORKER)

    assert outcome == RetryLater(30)  # a dead holder's lease lapses within this
    assert restorer.calls == []
    assert store.redis.get(store.lease_key(job.id)) == "w2@test"  # the holder keeps its lease
    record = store.get(job.id)
    assert (record.state, record.worker, record.attempts, record.lost) == (JobState.running, "w2@test", 1, 0)


def test_a_redelivery_after_a_lost_worker_counts_the_loss_and_runs_the_job(store):
    job = _job(store)
    store.start(job.id, "dead@test", 30_000)
    _lease_lapses(store, job)

    outcome = _runner(store, StubRestorer(), max_lost_deliveries=2).run(job, WORKER)

    assert outcome["state"] == "succeeded"
    final = store.get(job.id)
    assert (final.state, final.attempts, final.lost, final.worker) == (JobState.succeeded, 2, 1, WORKER)


def test_a_job_whose_worker_was_lost_too_often_fails_without_running(store):
    job = _job(store)
    for dead in ("dead1@test", "dead2@test"):
        store.start(job.id, dead, 30_000)
        _lease_lapses(store, job)
    restorer = StubRestorer()
    failed = _sample("imgrestore_job_failures_total", task="denoise", reason="delivery_limit")

    outcome = _runner(store, restorer, max_lost_deliveries=2).run(job, WORKER)

    assert outcome["state"] == "failed" and outcome["error"]["type"] == "delivery_limit"
    assert restorer.calls == []  # the image that may exhaust a worker's memory is not tried a third time
    final = store.get(job.id)
    assert (final.state, final.attempts, final.lost) == (JobState.failed, 3, 2)
    assert "lost 2 times" in final.error.message and "imgrestore retry" in final.error.message
    assert store.dead_letters() == [job.id]
    assert _sample("imgrestore_job_failures_total", task="denoise", reason="delivery_limit") == failed + 1


def test_a_transient_failure_requeues_the_job_with_backoff(store):
    job = _job(store)
    retried = _sample("imgrestore_job_retries_total", task="denoise", reason="storage_unavailable")

    outcome = _runner(store, StubRestorer(TransientStorageError("S3 answered 503 SlowDown")),
                      max_retries=3, retry_backoff_base=4.0).run(job, WORKER)

    assert isinstance(outcome, RetryLater) and 2.0 <= outcome.delay <= 4.0  # first retry: [½, 1] × base
    record = store.get(job.id)
    assert (record.state, record.retries, record.attempts) == (JobState.queued, 1, 1)
    assert record.error.type == "storage_unavailable" and record.error.transient
    assert store.dead_letters() == [] and not store.redis.exists(store.lease_key(job.id))
    assert _sample("imgrestore_job_retries_total", task="denoise", reason="storage_unavailable") == retried + 1


def test_retries_back_off_exponentially_up_to_the_cap(store):
    job = _job(store)
    runner = _runner(store, StubRestorer(TransientStorageError("timeout")), max_retries=10, retry_backoff_base=1.0,
                     retry_backoff_max=6.0)
    delays = [runner.run(job, WORKER).delay for _ in range(5)]
    for retry, delay in enumerate(delays):
        ceiling = min(6.0, 2.0 ** retry)
        assert ceiling / 2 <= delay <= ceiling, (retry, delays)
    assert store.get(job.id).retries == 5


def test_a_transient_failure_past_the_retry_limit_fails_the_job(store):
    job = _job(store)
    restorer = StubRestorer(TransientStorageError("S3 answered 503 SlowDown"))
    runner = _runner(store, restorer, max_retries=2, retry_backoff_base=0.01)
    assert isinstance(runner.run(job, WORKER), RetryLater)
    assert isinstance(runner.run(job, WORKER), RetryLater)
    failed = _sample("imgrestore_jobs_total", task="denoise", state="failed")

    outcome = runner.run(job, WORKER)

    assert outcome["state"] == "failed"
    final = store.get(job.id)
    assert (final.state, final.retries, final.attempts) == (JobState.failed, 2, 3)
    assert final.error.type == "storage_unavailable"
    assert final.error.message == "S3 answered 503 SlowDown (gave up after 2 retries)"
    assert store.dead_letters() == [job.id]
    assert _sample("imgrestore_jobs_total", task="denoise", state="failed") == failed + 1


@pytest.mark.parametrize("raised, error_type", [(ImageDecodeError("not an image: truncated PNG"), "image_decode"),
                                                 (ZeroDivisionError("a bug"), "internal")])
def test_a_permanent_failure_fails_the_job_at_once(store, raised, error_type):
    job = _job(store)
    notes: list[Notification] = []

    outcome = _runner(store, StubRestorer(raised), notes, max_retries=5).run(job, WORKER)

    assert outcome["state"] == "failed" and outcome["error"]["type"] == error_type
    final = store.get(job.id)
    assert (final.state, final.retries, final.attempts) == (JobState.failed, 0, 1)
    assert final.error.type == error_type and not final.error.transient
    assert store.dead_letters() == [job.id]
    assert not store.redis.exists(store.lease_key(job.id))
    assert notes == []  # no callback URL: nothing to send


def test_the_last_job_of_a_batch_owes_the_batch_webhook(store):
    from services.queue.batch_store import Batch, BatchStore

    batches = BatchStore(store)
    batch = batches.create(Batch(task="denoise", callback_url="https://hooks.example/batch"))
    jobs = [_job(store, batch_id=batch.id, input_url=f"/in/{n}.png") for n in range(2)]
    store.redis.hset(batches.key(batch.id), mapping={"total": 2})
    batches.seal(batch.id)
    notes: list[Notification] = []
    runner = _runner(store, StubRestorer(), notes)

    runner.run(jobs[0], WORKER)
    assert notes == []
    runner.run(jobs[1], WORKER)

    assert [(n.event, n.payload["succeeded"], n.payload["state"]) for n in notes] == [
        ("batch.finished", 2, "finished")]


def test_a_record_that_expired_is_recreated_from_the_message(store):
    job = Job(task="denoise", input_url="/in/a.png", output_url="/out/a.png")  # never written: the record expired

    outcome = _runner(store, StubRestorer()).run(job, WORKER)

    assert outcome["state"] == "succeeded"
    assert store.get(job.id).state is JobState.succeeded


def test_a_delivery_interrupted_by_a_redis_outage_is_queued_again_not_lost(store):
    job = _job(store)
    runner = _runner(store, StubRestorer())
    store.start(job.id, WORKER, 30_000)
    interrupted = _sample("imgrestore_deliveries_interrupted_total", task="denoise")

    assert runner.interrupted(job, WORKER)
    assert not runner.interrupted(job, WORKER)  # only a job running here, once

    record = store.get(job.id)
    assert (record.state, record.interrupted, record.lost) == (JobState.queued, 1, 0)
    assert _sample("imgrestore_deliveries_interrupted_total", task="denoise") == interrupted + 1
    assert runner.run(job, WORKER)["state"] == "succeeded"
    assert (store.get(job.id).attempts, store.get(job.id).lost) == (2, 0)  # the next start is not a lost delivery
