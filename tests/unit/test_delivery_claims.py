"""Delivery claims against a real Redis (no worker): which unacknowledged deliveries no live worker holds, and
which deliveries a lease keeper remembers to hand back after a lost connection."""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

import pytest

from services.queue.celery_app import RESTORE_TASK
from services.queue.job_store import JobStore
from services.queue.leases import DeliveryClaims, LeaseKeeper


@pytest.fixture()
def claims(redis_url: str):
    store = JobStore.from_url(redis_url, f"claims-{uuid.uuid4().hex[:8]}:")
    index = f"unacked_index-{uuid.uuid4().hex[:8]}"
    yield DeliveryClaims(store, ttl_ms=10_000), index
    store.redis.delete(index)


def test_only_old_deliveries_that_no_live_keeper_holds_are_unclaimed(claims):
    claims, index = claims
    now = time.time()
    claims.store.redis.zadd(index, {"held-old": now - 60, "dead-old": now - 60, "fresh": now})
    claims.claim("live-worker", ["held-old"])
    assert claims.unclaimed(index, now - 10) == ["dead-old"]  # "fresh" is young: its keeper may not have run yet


def test_a_keeper_whose_claims_lapsed_is_dead_and_forgotten(claims):
    claims, index = claims
    short = DeliveryClaims(claims.store, ttl_ms=50)
    now = time.time()
    claims.store.redis.zadd(index, {"a": now - 60, "b": now - 60})
    short.claim("killed-worker", ["a"])
    claims.claim("live-worker", ["b"])
    assert claims.unclaimed(index, now - 10) == []
    time.sleep(0.1)
    assert claims.unclaimed(index, now - 10) == ["a"]
    assert claims.store.redis.zrange(claims.registry_key, 0, -1) == ["live-worker"]


def test_a_keeper_that_holds_nothing_is_still_alive_and_a_new_claim_replaces_the_old(claims):
    claims, index = claims
    now = time.time()
    claims.store.redis.zadd(index, {"acked-soon": now - 60})
    claims.claim("w", ["acked-soon"])
    claims.claim("w", [])
    assert claims.store.redis.exists(claims.held_prefix + "w")
    assert claims.unclaimed(index, now - 10) == ["acked-soon"]
    claims.release("w")
    assert not claims.store.redis.exists(claims.held_prefix + "w")
    assert claims.store.redis.zrange(claims.registry_key, 0, -1) == []


class _Channel:
    """The parts of kombu's Redis channel a keeper reads: its record of unacknowledged deliveries and key names."""

    def __init__(self, index: str) -> None:
        self.qos = SimpleNamespace(_delivered={})
        self.global_keyprefix = ""
        self.unacked_index_key = index
        self.unacked_key = index + "-unacked"


def test_a_delivery_kombu_dropped_while_closing_a_broken_connection_is_still_handed_back(claims):
    """Issue 15, item 3: Redis came back before Celery noticed the lost connection; kombu emptied its record (and put
    the message back) while the keeper kept renewing. The keeper must still report the delivery, so the job is
    marked interrupted, not lost. Before: only the last round's deliveries were kept — an empty list here."""
    claims, index = claims
    channel = _Channel(index)
    consumer = SimpleNamespace(task_consumer=SimpleNamespace(channel=channel), hostname="w@test")
    keeper = LeaseKeeper(consumer, claims.store, interval=0.5, lease_ms=10_000)
    channel.qos._delivered["tag-1"] = SimpleNamespace(headers={"id": "job-1", "task": RESTORE_TASK})
    keeper.renew_once()
    channel.qos._delivered.clear()  # kombu closing the broken connection
    keeper.renew_once()
    keeper.renew_once()
    assert [d.task_id for d in keeper.held()] == ["job-1"]


def test_deliveries_older_than_the_lease_ttl_are_forgotten(claims):
    claims, index = claims
    channel = _Channel(index)
    consumer = SimpleNamespace(task_consumer=SimpleNamespace(channel=channel), hostname="w@test")
    keeper = LeaseKeeper(consumer, claims.store, interval=0.01, lease_ms=50)
    channel.qos._delivered["tag-1"] = SimpleNamespace(headers={"id": "job-1", "task": RESTORE_TASK})
    keeper.renew_once()
    channel.qos._delivered.clear()
    time.sleep(0.1)
    keeper.renew_once()
    assert keeper.held() == []
