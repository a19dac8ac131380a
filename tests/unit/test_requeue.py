"""Re-queuing failed jobs, against a real Redis and no worker: a re-queued job gets its whole retry budget back
(issue 10, bug 2), and dead letters whose records expired are trimmed and skipped by ``imgrestore retry``
(issue 10, bug 3)."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from services.cli import retry as retry_verb
from services.cli.common import cli
from services.config import Settings
from services.errors import TransientStorageError
from services.job_runner import JobRunner, RetryLater
from services.jobs import Job, JobError, JobState, StageTimings
from services.queue import celery_app
from services.queue.celery_app import create_app
from services.queue.job_store import JobStore
from tests.support.namespaces import isolated_settings, isolated_store

WORKER = "w1@test"


@pytest.fixture()
def config(redis_url: str) -> Settings:
    return isolated_settings(redis_url, "rq", max_retries=2)


@pytest.fixture()
def store(config: Settings):
    yield from isolated_store(config)


class FlakyStorageRestorer:
    """Every restore meets a transient storage error (an S3 endpoint that keeps timing out)."""

    def restore(self, job: Job, timings: StageTimings | None = None):
        raise TransientStorageError(f"{job.input_url}: store unavailable (503) after retries")


def _queued(store: JobStore) -> Job:
    job = Job(task="denoise", input_url="/in.png", output_url="/out.png")
    store.create(job)
    return job


def _dead(store: JobStore) -> Job:
    job = _queued(store)
    assert store.fail(job.id, JobError(type="storage_unavailable", message="store unavailable"))
    return job


def _expire(store: JobStore, job: Job) -> None:
    """What the record TTL does to a dead letter: the record is gone, its entry (scored at failure) stays."""
    store.redis.delete(store.job_key(job.id))
    store.redis.zadd(store.dead_key, {job.id: time.time() - store.ttl - 60})


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


def test_dead_letters_older_than_the_record_ttl_are_trimmed(store):
    kept, expired = _dead(store), _dead(store)
    _expire(store, expired)
    assert store.dead_letters() == [kept.id]
    assert store.redis.zscore(store.dead_key, expired.id) is None  # removed from the set, not only hidden


def test_failing_a_job_trims_the_dead_letters_whose_records_expired(store):
    expired = _dead(store)
    _expire(store, expired)
    _dead(store)  # the next failure, with no one listing the dead letters: the set does not grow for ever
    assert store.redis.zscore(store.dead_key, expired.id) is None


def test_retry_dead_letters_skips_records_that_are_gone_says_how_many_and_exits_0(config, store, monkeypatch):
    first, expired, gone, second = _dead(store), _dead(store), _dead(store), _dead(store)
    _expire(store, expired)
    store.redis.delete(store.job_key(gone.id))  # a record gone before its time (deleted, evicted): still listed
    monkeypatch.setattr(retry_verb, "settings", lambda: config)
    app = create_app(config)  # re-queued messages go to this test's Redis database, wherever the verb takes its app
    monkeypatch.setattr(celery_app, "app", app)
    monkeypatch.setattr(retry_verb, "app", app, raising=False)

    result = CliRunner().invoke(cli, ["retry", "--dead-letters"])

    # Before the fix: exit 2 at the first id without a record, nothing printed, some jobs already re-queued.
    assert result.exit_code == 0, (result.stdout, result.stderr)
    report = json.loads(result.stdout)
    assert sorted(report["requeued"]) == sorted([first.id, second.id])
    assert report["gone"] == [gone.id]
    assert "1 job skipped" in result.stderr
    assert {store.get(j.id).state for j in (first, second)} == {JobState.queued}
    waiting = store.redis.lrange(config.queue_for("denoise"), 0, -1)
    assert sorted(json.loads(m)["headers"]["id"] for m in waiting) == sorted([first.id, second.id])
    assert store.dead_letters() == []


def test_retry_with_no_dead_letters_is_not_a_usage_error(config, store, monkeypatch):
    # Found by the README test (issue 13, item 1): the monitor section's `imgrestore retry --dead-letters` exited 2
    # with "give job ids, --failed BATCH_ID or --dead-letters" on a service with nothing dead-lettered.
    monkeypatch.setattr(retry_verb, "settings", lambda: config)
    assert store.dead_letters() == []
    result = CliRunner().invoke(cli, ["retry", "--dead-letters"])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert json.loads(result.stdout) == {"requeued": [], "skipped": [], "gone": []}
    assert CliRunner().invoke(cli, ["retry"]).exit_code == 2  # nothing asked for: still a usage error
