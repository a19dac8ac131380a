"""Delivery claims against a real Redis (no worker): which unacknowledged deliveries no live worker holds."""

from __future__ import annotations

import time
import uuid

import pytest

from services.jobstore import JobStore
from services.leases import DeliveryClaims


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
