"""``LeaseKeeper`` in-process against a real Redis and real kombu deliveries (no worker process): what one round
renews and claims, which dead worker's deliveries it reclaims (and which it must leave alone), and how deliveries of
a lost connection are handed back. Delivery times are set in the past instead of waited for."""

from __future__ import annotations

import json
import time
import uuid
from types import SimpleNamespace

import pytest
from celery.worker import state as worker_state
from kombu import Connection
from prometheus_client import REGISTRY

from services.config import Settings
from services.jobs import Job, JobState
from services.queue.celery_app import RESTORE_TASK, create_app
from services.queue.job_store import JobStore
from services.queue.leases import Delivery, LeaseKeeper
from services.queue.submission import Submitter

LEASE_MS = 2_000
HOST = "w1@test"


class Broker:
    """A queue prefix, job store and kombu connection of one test's own (its own unacked keys, too)."""

    def __init__(self, redis_url: str) -> None:
        prefix = f"lk{uuid.uuid4().hex[:8]}:"
        self.settings = Settings(redis_url=redis_url, key_prefix=prefix, queue_prefix=prefix)
        self.store = JobStore.from_url(redis_url, prefix)
        self.submitter = Submitter(self.settings, self.store, create_app(self.settings))
        self.queue = self.settings.queue_for("denoise")
        self.options = {"unacked_key": prefix + "unacked", "unacked_index_key": prefix + "unacked_index",
                        "unacked_mutex_key": prefix + "unacked_mutex"}
        self.connections: list[Connection] = []

    def channel(self):
        """A broker connection's channel, as a worker has one."""
        connection = Connection(self.settings.redis_url, transport_options=self.options)
        self.connections.append(connection)
        return connection.default_channel

    def queued_job(self) -> Job:
        job = Job(task="denoise", input_url="/in/a.png", output_url="/out/a.png")
        self.submitter.create_queued(job)
        return job

    def deliver(self, channel) -> str:
        """Takes the next message off the queue, unacknowledged; returns its delivery tag."""
        message = channel.basic_get(self.queue, no_ack=False)
        assert message is not None, "nothing queued"
        return message.delivery_tag

    def delivered_at(self, tag: str) -> float | None:
        return self.store.redis.zscore(self.options["unacked_index_key"], tag)

    def age(self, tag: str, seconds: float) -> None:
        self.store.redis.zadd(self.options["unacked_index_key"], {tag: time.time() - seconds})

    def waiting_ids(self) -> list[str]:
        return [json.loads(raw)["headers"]["id"] for raw in self.store.redis.lrange(self.queue, 0, -1)]

    def close(self) -> None:
        for connection in self.connections:
            connection.release()


@pytest.fixture()
def broker(redis_url: str):
    made = Broker(redis_url)
    yield made
    made.close()


def _keeper(channel, broker: Broker, **kwargs) -> LeaseKeeper:
    consumer = SimpleNamespace(task_consumer=SimpleNamespace(channel=channel), hostname=HOST)
    return LeaseKeeper(consumer, broker.store, interval=0.5, lease_ms=LEASE_MS, **kwargs)


def _reclaimed(task: str) -> float:
    return REGISTRY.get_sample_value("imgrestore_deliveries_reclaimed_total", {"task": task}) or 0.0


def test_a_round_renews_delivery_times_and_leases_and_claims_what_it_holds(broker, monkeypatch):
    channel = broker.channel()
    job = broker.queued_job()
    tag = broker.deliver(channel)
    broker.age(tag, 50)
    assert broker.store.start(job.id, HOST, 100).status == "started"  # a lease about to lapse
    monkeypatch.setattr(worker_state, "reserved_requests", [SimpleNamespace(id=job.id)])
    keeper = _keeper(channel, broker)

    assert keeper.renew_once() == 1

    assert time.time() - broker.delivered_at(tag) < 5  # due for redelivery again only a visibility timeout from now
    assert broker.store.redis.pttl(broker.store.lease_key(job.id)) > 1_000  # renewed to the lease TTL
    held = broker.store.redis.smembers(keeper.claims.held_prefix + keeper.keeper)
    assert tag in held
    assert keeper.keeper in broker.store.redis.zrange(keeper.claims.registry_key, 0, -1)


def test_a_round_never_renews_a_lease_that_another_worker_holds(broker, monkeypatch):
    job = broker.queued_job()
    # Longer than this keeper's lease (a renewal would shorten it to LEASE_MS), long enough to outlive a loaded box.
    other_workers_lease_ms = 10 * LEASE_MS
    broker.store.start(job.id, "w2@test", other_workers_lease_ms)
    monkeypatch.setattr(worker_state, "reserved_requests", [SimpleNamespace(id=job.id)])

    _keeper(broker.channel(), broker).renew_once()

    assert broker.store.redis.get(broker.store.lease_key(job.id)) == "w2@test"
    assert LEASE_MS < broker.store.redis.pttl(broker.store.lease_key(job.id)) <= other_workers_lease_ms


def test_a_dead_workers_delivery_goes_back_to_the_front_of_its_queue(broker, monkeypatch):
    monkeypatch.setattr(worker_state, "reserved_requests", [])
    dead_channel = broker.channel()  # a worker that died: it never claims what it holds
    job = broker.queued_job()
    dead_tag = broker.deliver(dead_channel)
    behind = broker.queued_job()  # queued after it: the reclaimed job must come out first
    broker.age(dead_tag, LEASE_MS / 1000 + 1)
    keeper = _keeper(broker.channel(), broker)
    keeper.renew_once()
    reclaimed_before = _reclaimed("denoise")

    assert keeper.reclaim_unclaimed() == [dead_tag]

    assert broker.delivered_at(dead_tag) is None  # no longer unacknowledged
    assert broker.waiting_ids()[-1] == job.id and behind.id in broker.waiting_ids()  # the next delivery is it
    assert _reclaimed("denoise") == reclaimed_before + 1
    assert keeper.reclaim_unclaimed() == []  # once


def test_deliveries_a_live_keeper_claims_or_that_are_young_are_not_reclaimed(broker, monkeypatch):
    monkeypatch.setattr(worker_state, "reserved_requests", [])
    live_channel, young_channel = broker.channel(), broker.channel()
    broker.queued_job(), broker.queued_job()
    slow_tag = broker.deliver(live_channel)  # a slow job of a live worker
    young_tag = broker.deliver(young_channel)  # delivered just now: its keeper may not have run yet
    live = _keeper(live_channel, broker)
    live.renew_once()
    broker.age(slow_tag, 60)  # as if the renewal had been missed, yet the claim is fresh
    reclaimer = _keeper(broker.channel(), broker)
    reclaimer.renew_once()

    assert reclaimer.reclaim_unclaimed() == []
    assert broker.delivered_at(slow_tag) is not None and broker.delivered_at(young_tag) is not None
    assert broker.waiting_ids() == []


def test_a_delivery_whose_job_lease_is_still_held_is_left_for_a_round(broker, monkeypatch):
    monkeypatch.setattr(worker_state, "reserved_requests", [])
    dead_channel = broker.channel()
    job = broker.queued_job()
    tag = broker.deliver(dead_channel)
    broker.store.start(job.id, "dead@test", 60_000)  # started after its delivery: the lease outlives the claims
    broker.age(tag, 60)
    keeper = _keeper(broker.channel(), broker)
    keeper.renew_once()

    assert keeper.reclaim_unclaimed() == []
    broker.store.redis.delete(broker.store.lease_key(job.id))  # the dead worker's lease lapses
    assert keeper.reclaim_unclaimed() == [tag]


def test_deliveries_of_a_lost_connection_are_handed_back_as_interrupted(broker, monkeypatch):
    lost_channel = broker.channel()
    finished_here, still_running = broker.queued_job(), broker.queued_job()
    tags = {broker.deliver(lost_channel), broker.deliver(lost_channel)}
    by_job = {json.loads(broker.store.redis.hget(broker.options["unacked_key"], t))[0]["headers"]["id"]: t
              for t in tags}
    for job in (finished_here, still_running):
        broker.store.start(job.id, HOST, LEASE_MS)
    monkeypatch.setattr(worker_state, "active_requests", [SimpleNamespace(id=still_running.id)])
    interrupted = [Delivery(by_job[j.id], j.id, RESTORE_TASK) for j in (finished_here, still_running)]
    keeper = _keeper(broker.channel(), broker, interrupted=interrupted)  # the new connection's keeper

    assert keeper.hand_back_interrupted() == [finished_here.id]

    record = broker.store.get(finished_here.id)
    assert (record.state, record.interrupted, record.lost) == (JobState.queued, 1, 0)
    assert broker.waiting_ids() == [finished_here.id]  # back on the queue now, not a visibility timeout later
    assert broker.store.get(still_running.id).state is JobState.running  # stays until its run ends
    assert [d.task_id for d in keeper.interrupted] == [still_running.id]
    assert broker.delivered_at(by_job[still_running.id]) is not None
