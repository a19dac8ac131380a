"""The orphan sweep against a real Redis (no worker): a job ``queued`` or ``running`` with no lease and no message
anywhere for longer than the visibility timeout is re-queued exactly once; anything held, waiting in a queue, in
flight or recent is left alone."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from services.config import Settings
from services.jobs import Job, JobError, JobState
from services.queue import depth
from services.queue.celery_app import create_app
from services.queue.job_store import JobStore
from services.queue.recovery import OrphanSweeper
from services.queue.submission import Submitter

V = 60


@pytest.fixture()
def env(redis_url: str):
    settings = Settings(redis_url=redis_url, key_prefix=f"orph-{uuid.uuid4().hex[:8]}:",
                        queue_prefix=f"o{uuid.uuid4().hex[:8]}.", visibility_timeout=V)
    store = JobStore.from_url(redis_url, settings.key_prefix)
    submitter = Submitter(settings, store, create_app(settings))
    yield settings, store, submitter
    store.redis.delete(*[settings.queue_for(t) for t in ("denoise", "colorize", "watermark")])


def _sweeper(env, later: float = V + 1, name: str = "s1") -> OrphanSweeper:
    settings, store, submitter = env
    return OrphanSweeper(settings, store, submitter, name=name, clock=lambda: time.time() + later)


def _running(store: JobStore, lease_ms: int = 1, worker: str = "ghost@test") -> Job:
    """A job a worker started (lease of ``lease_ms``) and that has no message: the shape issue 15 left behind."""
    job = Job(task="denoise", input_url="/in.png", output_url="/out.png")
    store.create(job)
    assert store.start(job.id, worker, lease_ms).status == "started"
    time.sleep(0.01)
    return job


def _queued_ids(env) -> list[str]:
    settings, store, _ = env
    raw = store.redis.lrange(settings.queue_for("denoise"), 0, -1)
    return [json.loads(m)["headers"]["id"] for m in raw]


def test_an_orphan_is_requeued_once_and_its_next_start_is_not_a_lost_delivery(env):
    settings, store, _ = env
    job = _running(store)
    assert _sweeper(env).sweep() == [job.id]
    assert _queued_ids(env) == [job.id]
    assert _sweeper(env, name="s2").sweep() == []  # its claim and its new message: nothing left to do
    assert _queued_ids(env) == [job.id]
    assert store.recovery_counts()["orphans_requeued"] == 1

    record = store.get(job.id)
    assert record.state is JobState.running and record.orphaned == 1
    outcome = store.start(job.id, "w2@test", 60_000)  # the sweeper's claim does not block the delivery
    assert (outcome.status, outcome.attempts, outcome.lost) == ("started", 2, 0)


def test_held_queued_in_flight_and_recent_jobs_are_left_alone(env):
    settings, store, submitter = env
    held = _running(store, lease_ms=600_000)
    queued = _running(store)
    submitter.enqueue(queued)  # a dead worker's job, its message already put back in the queue
    in_flight = _running(store)
    submitter.enqueue(in_flight)
    queue = settings.queue_for("denoise")
    raw = store.redis.lpop(queue)  # kombu's delivery: the message moves to ``unacked`` as [message, exchange, key]
    assert json.loads(raw)["headers"]["id"] == in_flight.id
    tag = uuid.uuid4().hex
    store.redis.hset("unacked", tag, json.dumps([json.loads(raw), queue, queue]))
    try:
        assert _sweeper(env).sweep() == []
        recent = _running(store)
        assert _sweeper(env, later=0).sweep() == []  # not started for V seconds yet
        assert _sweeper(env).sweep() == [recent.id]
    finally:
        store.redis.hdel("unacked", tag)
    assert store.get(held.id).orphaned == 0 and store.get(queued.id).orphaned == 0
    assert store.get(in_flight.id).orphaned == 0


def test_concurrent_sweepers_requeue_each_orphan_exactly_once(env):
    _, store, _ = env
    orphans = {_running(store).id for _ in range(20)}
    results: list[list[str]] = []
    threads = [threading.Thread(target=lambda i=i: results.append(_sweeper(env, name=f"s{i}").sweep()))
               for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    requeued = [job_id for result in results for job_id in result]
    assert sorted(requeued) == sorted(orphans)  # each once, by one sweeper
    assert sorted(_queued_ids(env)) == sorted(orphans)
    assert store.recovery_counts()["orphans_requeued"] == 20


def test_a_claim_never_followed_by_a_publish_lapses_and_the_orphan_is_found_again(env):
    _, store, _ = env
    job = _running(store)
    assert store.claim_orphan(job.id, "dies-before-publishing", time.time() + 1, claim_ms=50)
    assert _sweeper(env).sweep() == []  # claimed: a lease of its own
    time.sleep(0.1)
    assert _sweeper(env).sweep() == [job.id]
    assert _queued_ids(env) == [job.id]


def test_a_queued_job_whose_message_vanished_is_requeued(env):
    """A worker SIGKILLed between kombu's BRPOP and its write to ``unacked`` takes the only copy of the message."""
    _, store, submitter = env
    vanished = Job(task="denoise", input_url="/in.png", output_url="/out.png")
    store.create(vanished)  # recorded; its message popped by a worker that died at once
    waiting = Job(task="denoise", input_url="/w.png", output_url="/wo.png")
    store.create(waiting)
    submitter.enqueue(waiting)
    assert _sweeper(env).sweep() == [vanished.id]
    assert sorted(_queued_ids(env)) == sorted([vanished.id, waiting.id])
    outcome = store.start(vanished.id, "w@test", 60_000)
    assert (outcome.status, outcome.attempts, outcome.lost) == ("started", 1, 0)


def test_an_orphan_behind_a_backlog_of_older_waiting_jobs_is_requeued(env):
    """The sweep read only the oldest thousand unchanged jobs: behind a thousand older jobs waiting with their
    messages (none of which it would ever claim, so the page never moved) an orphan waited for the whole backlog
    (the CI failure of test_sigkilled_workers_lose_no_job_and_finish_each_exactly_once, behind older tests' jobs)."""
    settings, store, submitter = env
    backlog = [Job(task="watermark", input_url=f"/b{i}.png", output_url=f"/bo{i}.png") for i in range(1001)]
    assert all(submitter.create_queued_many(backlog))
    time.sleep(0.01)
    vanished = Job(task="denoise", input_url="/in.png", output_url="/out.png")
    assert submitter.create_queued(vanished)
    assert store.redis.lpop(settings.queue_for("denoise")) is not None  # a worker took it and died at once
    assert _sweeper(env).sweep() == [vanished.id]
    assert _queued_ids(env) == [vanished.id]
    store.redis.delete(settings.queue_for("watermark"))


def test_jobs_of_another_deployment_sharing_the_key_prefix_are_left_to_it(env):
    """A sweeper sees only its own queues: another deployment's waiting job would look orphaned to it."""
    settings, store, _ = env
    other = Settings(redis_url=settings.redis_url, key_prefix=settings.key_prefix,
                     queue_prefix=f"x{uuid.uuid4().hex[:8]}.", visibility_timeout=V)
    theirs = Job(task="denoise", input_url="/t.png", output_url="/to.png")
    try:
        assert Submitter(other, store, create_app(other)).create_queued(theirs)
        assert _sweeper(env).sweep() == []
        assert store.get(theirs.id).orphaned == 0 and _queued_ids(env) == []
        assert OrphanSweeper(other, store, Submitter(other, store, create_app(other)), name="theirs",
                             clock=lambda: time.time() + V + 1).sweep() == []  # its message is in its queue
    finally:
        store.redis.delete(other.queue_for("denoise"))


def test_a_record_that_cannot_be_requeued_does_not_stop_the_sweep(env, monkeypatch):
    settings, store, submitter = env
    broken, orphan = _running(store), _running(store)
    publish = submitter.enqueue

    def enqueue(job: Job) -> None:
        if job.id == broken.id:
            raise ValueError("unreadable record")
        publish(job)

    monkeypatch.setattr(submitter, "enqueue", enqueue)
    assert _sweeper(env).sweep() == [orphan.id]
    assert _queued_ids(env) == [orphan.id]


def test_finished_jobs_leave_the_unfinished_index(env):
    _, store, _ = env
    failed = _running(store)
    cancelled = Job(task="denoise", input_url="/c.png", output_url="/co.png")
    store.create(cancelled)
    store.fail(failed.id, JobError(type="input_not_found", message="gone"))
    assert store.cancel(cancelled.id)
    for job in (failed, cancelled):
        assert store.redis.zscore(store.unfinished_key, job.id) is None
    assert _sweeper(env).sweep() == []


def test_retry_of_an_unfinished_job_requeues_it_only_when_it_is_an_orphan(env):
    _, store, _ = env
    orphan, held = _running(store), _running(store, lease_ms=600_000)
    sweeper = _sweeper(env, later=0)
    assert sweeper.requeue_if_orphan(orphan.id)  # no age needed: an operator asked
    assert not sweeper.requeue_if_orphan(orphan.id)  # now it has a message
    assert not sweeper.requeue_if_orphan(held.id)


def test_an_interrupted_delivery_is_queued_again_without_counting_a_lost_one(env):
    _, store, _ = env
    job = _running(store, lease_ms=600_000, worker="w1@test")
    assert not store.interrupt(job.id, "w2@test")  # only the worker that was running it may say so
    assert store.interrupt(job.id, "w1@test")
    assert not store.interrupt(job.id, "w1@test")  # once
    record = store.get(job.id)
    assert (record.state, record.interrupted, record.lost) == (JobState.queued, 1, 0)
    assert store.start(job.id, "w2@test", 60_000).lost == 0  # its lease was released with it
    assert store.recovery_counts()["interrupted"] == 1


def test_task_ids_with_messages_reads_queues_and_unacked(env):
    settings, store, submitter = env
    jobs = [Job(task="denoise", input_url=f"/{i}.png", output_url=f"/o{i}.png") for i in range(3)]
    for job in jobs:
        submitter.enqueue(job)
    names = [settings.queue_for("denoise")]
    assert {j.id for j in jobs} <= depth.task_ids_with_messages(store.redis, names, page=2)
