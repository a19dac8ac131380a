"""Leases are held per process, and a Redis outage is not a lost worker (issue 10, bug 6). Against a real Redis
with stub restorers, in-process (one fork stands for a second pool process): milliseconds, no fixed sleeps."""

from __future__ import annotations

import os
import threading
import uuid

import pytest
import redis

from services.config import Settings
from services.job_runner import JobRunner, RetryLater
from services.jobs import Job, JobState, OutputInfo, RestoreOutcome, StageTimings
from services.queue.job_store import JobStore

NODE = "celery@node1"


@pytest.fixture()
def config(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, key_prefix=f"pl-{uuid.uuid4().hex[:8]}:", max_lost_deliveries=2)


@pytest.fixture()
def store(config: Settings):
    store = JobStore.from_url(config.redis_url, config.key_prefix, config.job_ttl_seconds)
    yield store
    store.redis.delete(*store.redis.scan_iter(f"{config.key_prefix}*"))


def _queued(store: JobStore) -> Job:
    job = Job(task="denoise", input_url="/in.png", output_url="/out.png")
    store.create(job)
    return job


def _outcome() -> RestoreOutcome:
    result = OutputInfo(width=8, height=8, mode="RGB", format="PNG", bytes=10, megapixels=0.0001,
                        model="stub", tiles=1)
    return RestoreOutcome(result=result, timings=StageTimings(), provider="stub")


class HeldRestorer:
    """Restores once ``release`` is set, after saying it started."""

    def __init__(self, released: bool = False) -> None:
        self.started, self.release = threading.Event(), threading.Event()
        if released:
            self.release.set()

    def restore(self, job: Job, timings: StageTimings | None = None) -> RestoreOutcome:
        self.started.set()
        assert self.release.wait(30), "never released"
        return _outcome()


def test_two_pool_processes_of_one_node_never_run_the_same_job_at_once(config, store):
    job = _queued(store)
    restorer = HeldRestorer()
    runner = JobRunner(config, store, restorer)
    outcomes: list = []
    first = threading.Thread(target=lambda: outcomes.append(runner.run(job, NODE)))
    first.start()
    assert restorer.started.wait(10)
    pid = os.fork()
    if pid == 0:  # a second pool process of the same node gets a redelivery of the running job
        code = 3
        try:
            other = HeldRestorer(released=True)
            own_store = JobStore.from_url(config.redis_url, config.key_prefix, config.job_ttl_seconds)
            code = 0 if isinstance(JobRunner(config, own_store, other).run(job, NODE), RetryLater) else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    restorer.release.set()
    first.join(10)
    # Before the fix both processes owned the lease as the node's hostname: the second ran the job too (exit 1).
    assert os.waitstatus_to_exitcode(status) == 0, "the second process of the node did not find the job leased"
    final = store.get(job.id)
    assert outcomes[0]["state"] == "succeeded" and final.state is JobState.succeeded
    assert (final.attempts, final.lost, final.worker) == (1, 0, NODE)


def test_redis_blips_mid_job_do_not_fail_a_healthy_job_as_delivery_limit(config, store, monkeypatch):
    """Each blip cuts the job store off as the job ends, and the worker cannot write the delivery back either: the
    record stays ``running`` and the redelivery reaches the same live process. Before the fix each one counted a
    lost worker: with a limit of 2 the third delivery failed the job as ``delivery_limit``."""
    job = _queued(store)
    blips, succeed = [3], store.succeed

    def succeed_unless_redis_is_away(*args, **kwargs):
        if blips[0]:
            blips[0] -= 1
            raise redis.exceptions.ConnectionError("Connection reset by peer")
        return succeed(*args, **kwargs)

    monkeypatch.setattr(store, "succeed", succeed_unless_redis_is_away)
    runner = JobRunner(config, store, HeldRestorer(released=True))
    for _ in range(3):
        with pytest.raises(redis.exceptions.ConnectionError):
            runner.run(job, NODE)
        assert store.get(job.id).state is JobState.running
    assert runner.run(job, NODE)["state"] == "succeeded"
    final = store.get(job.id)
    assert (final.state, final.attempts, final.lost, final.interrupted) == (JobState.succeeded, 4, 0, 3)


def test_a_redelivery_after_a_redis_restart_is_an_interruption_not_a_lost_worker(store):
    job = _queued(store)
    assert store.start(job.id, f"{NODE}:101:aaaa:101", 10_000).status == "started"
    # Redis restarted while the job ran: the attempt began on the previous server, and its lease lapsed meanwhile.
    store.redis.hset(store.job_key(job.id), "redis_run", "0" * 40)
    store.redis.delete(store.lease_key(job.id))
    outcome = store.start(job.id, "celery@node2:202:bbbb:202", 10_000)
    assert (outcome.status, outcome.lost) == ("started", 0)  # before the fix: lost 1
    record = store.get(job.id)
    assert (record.lost, record.interrupted, record.worker) == (0, 1, "celery@node2")
    assert store.recovery_counts()["interrupted"] == 1


def test_a_worker_that_died_while_redis_stayed_up_is_still_a_lost_delivery(store):
    job = _queued(store)
    assert store.start(job.id, f"{NODE}:101:aaaa:101", 10_000).status == "started"
    store.redis.delete(store.lease_key(job.id))  # its lease lapsed: nobody renewed it
    outcome = store.start(job.id, "celery@node2:202:bbbb:202", 10_000)
    assert (outcome.status, outcome.lost) == ("started", 1)
    assert store.get(job.id).interrupted == 0


def test_a_node_renews_and_hands_back_the_leases_of_its_own_processes_only(store):
    job = _queued(store)
    owner = f"{NODE}:101:aaaa:101"
    assert store.start(job.id, owner, 10_000).status == "started"
    assert store.redis.get(store.lease_key(job.id)) == owner
    assert not store.renew_lease(job.id, NODE + "x", 60_000)  # a node whose name merely starts alike
    assert store.redis.pttl(store.lease_key(job.id)) <= 10_000
    assert store.renew_lease(job.id, NODE, 60_000)  # the node's lease keeper renews its processes' leases
    assert store.redis.pttl(store.lease_key(job.id)) > 10_000
    assert not store.interrupt(job.id, NODE + "x")
    assert store.interrupt(job.id, NODE)
    record = store.get(job.id)
    assert (record.state, record.interrupted) == (JobState.queued, 1)


def test_a_lease_owner_is_fixed_per_process_and_thread_and_names_its_node():
    from services.queue.job_store import lease_owner, node_of, process_of

    owner = lease_owner(NODE)
    assert owner == lease_owner(NODE) and node_of(owner) == NODE and str(os.getpid()) in owner
    other_thread: list[str] = []
    thread = threading.Thread(target=lambda: other_thread.append(lease_owner(NODE)))
    thread.start()
    thread.join()
    assert other_thread[0] != owner and process_of(other_thread[0]) == process_of(owner)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, lease_owner(NODE).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 200).decode()
    assert process_of(child) != process_of(owner) and node_of(child) == NODE


def test_two_slots_of_a_threads_pool_never_run_the_same_job_at_once(config, store):
    """``imgrestore worker --pool threads``: one process, several job slots. Before, they shared the process's lease
    owner, and the second slot ran the job too."""
    job = _queued(store)
    restorer = HeldRestorer()
    first = threading.Thread(target=lambda: JobRunner(config, store, restorer).run(job, NODE))
    first.start()
    assert restorer.started.wait(10)
    outcome: list = []
    second = threading.Thread(target=lambda: outcome.append(
        JobRunner(config, store, HeldRestorer(released=True)).run(job, NODE)))
    second.start()
    second.join(10)
    restorer.release.set()
    first.join(10)
    assert isinstance(outcome[0], RetryLater), outcome
    final = store.get(job.id)
    assert (final.state, final.attempts, final.lost) == (JobState.succeeded, 1, 0)
