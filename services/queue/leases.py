"""Lease renewal: a live worker keeps every job it holds from being delivered to anyone else.

kombu's Redis transport keeps each unacknowledged message in the ``unacked`` hash with its delivery time in the
``unacked_index`` sorted set; any worker's periodic sweep puts messages older than ``visibility_timeout`` back on
their queue (at the front: the end the next delivery is taken from). This thread, in the worker's main process,
moves the delivery time of every message the worker still holds (running, reserved or waiting for a retry
countdown) to "now", and extends the job-store lease of every reserved job. So the visibility timeout can be short
(quick redelivery after a crash) without ever redelivering a job that is merely slow: only a worker that stopped
renewing — a dead one — loses its messages.

A Redis outage is not a dead worker. When the broker connection drops, Celery stops the jobs it was running (their
messages stay unacknowledged in Redis) and reconnects. The deliveries held on the lost connection are then handed
back by the next keeper before the new connection takes anything: each job is marked ``interrupted`` (queued again,
not a lost delivery), its message's delivery time is moved into the past and kombu's sweep is run once, which puts
the message back at the front of its queue — the next delivery, instead of one a visibility timeout later or one
behind the backlog.

A dead worker is noticed sooner than the visibility timeout (issue 15). Each round, every keeper also records the
delivery tags it holds in a set of its own that lapses ``lease_ttl`` seconds after its last renewal (Redis's clock:
no skew between hosts), and reclaims deliveries that nobody claims: delivered or renewed more than ``lease_ttl``
seconds ago and in no live keeper's set. Those go back to the front of their queue at once (kombu's own
``restore_by_tag``: a transaction, so two reclaimers put a message back once). A slow job of a live worker is in its
keeper's set, so it is never reclaimed; the visibility timeout stays as the backstop for workers without a keeper.

The same bootstep runs the orphan sweep (``services.queue.recovery``) in every worker.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass

import redis
from celery import bootsteps
from celery.worker import state as worker_state

from .. import metrics
from ..config import Settings, get_settings
from ..jobs import Task
from .celery_app import RESTORE_TASK
from .clients import QueueClients, job_store
from .job_store import JobStore
from .recovery import OrphanSweeper

log = logging.getLogger(__name__)


def _snapshot(collection) -> list:
    """Copies a dict/set that the consumer thread may change while we read it."""
    for _ in range(5):
        try:
            return list(collection)
        except RuntimeError:  # changed size during iteration
            continue
    return []


def _snapshot_items(mapping: dict) -> list[tuple]:
    for _ in range(5):
        try:
            return list(mapping.items())
        except RuntimeError:
            continue
    return []


@dataclass(frozen=True)
class Delivery:
    """A message held unacknowledged on one broker connection."""

    tag: str
    task_id: str | None
    task_name: str | None


def held_deliveries(channel) -> list[Delivery]:
    """What ``channel`` holds unacknowledged (kombu's QoS record of delivered messages)."""
    out = []
    for tag, message in _snapshot_items(channel.qos._delivered):
        headers = getattr(message, "headers", None) or {}
        out.append(Delivery(str(tag), headers.get("id"), headers.get("task")))
    return out


# Deliveries older than the cutoff (ARGV[1]) in the unacked index (KEYS[1]) that no live keeper claims. A keeper is
# live while its claim set (ARGV[2] .. name) exists; the registry (KEYS[2]) forgets keepers whose set lapsed.
_UNCLAIMED_SCRIPT = """
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
if #stale == 0 then return {} end
local live = {}
for _, keeper in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local key = ARGV[2] .. keeper
  if redis.call('EXISTS', key) == 1 then live[#live + 1] = key else redis.call('ZREM', KEYS[2], keeper) end
end
local unclaimed = {}
for _, tag in ipairs(stale) do
  local claimed = false
  for _, key in ipairs(live) do
    if redis.call('SISMEMBER', key, tag) == 1 then claimed = true break end
  end
  if not claimed then unclaimed[#unclaimed + 1] = tag end
end
return unclaimed
"""

# A member every claim set has, so a keeper that holds nothing still exists (Redis deletes empty sets).
_ALIVE = "~alive"
RECLAIM_BATCH = 100


class DeliveryClaims:
    """Which deliveries live workers hold: one set of delivery tags per keeper (``<prefix>held:<keeper>``, expiring
    ``ttl_ms`` after its last renewal) and a registry of keepers (``<prefix>keepers``) to find the sets by."""

    def __init__(self, store: JobStore, ttl_ms: int) -> None:
        self.store = store
        self.ttl_ms = ttl_ms
        self.registry_key = f"{store.prefix}keepers"
        self.held_prefix = f"{store.prefix}held:"
        self._unclaimed = store.redis.register_script(_UNCLAIMED_SCRIPT)

    def claim(self, keeper: str, tags: list[str]) -> None:
        """Replaces ``keeper``'s claim set with ``tags`` (one transaction: a reclaimer never sees it half-written)."""
        key = self.held_prefix + keeper
        with self.store.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.sadd(key, _ALIVE, *tags)
            pipe.pexpire(key, self.ttl_ms)
            pipe.zadd(self.registry_key, {keeper: time.time()})
            pipe.execute()

    def release(self, keeper: str) -> None:
        """A keeper stopping cleanly drops its claims (a lost connection does not: its deliveries go back as
        interrupted, by this worker)."""
        with self.store.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.held_prefix + keeper)
            pipe.zrem(self.registry_key, keeper)
            pipe.execute()

    def unclaimed(self, index_key: str, older_than: float, limit: int = RECLAIM_BATCH) -> list[str]:
        """Tags in kombu's unacked index (``index_key``) last delivered or renewed before ``older_than`` (a Unix
        time) that no live keeper holds."""
        return list(self._unclaimed(keys=[index_key, self.registry_key], args=[older_than, self.held_prefix, limit]))


def keeper_name(hostname: str) -> str:
    """One per worker process: a worker restarted under the same hostname must not inherit its predecessor's
    claims (its deliveries would wait for the visibility timeout)."""
    return f"{hostname}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


class LeaseKeeper(threading.Thread):
    def __init__(self, consumer, store: JobStore, interval: float, lease_ms: int,
                 interrupted: list[Delivery] | None = None, name: str | None = None) -> None:
        super().__init__(name="imgrestore-lease-keeper", daemon=True)
        self.consumer = consumer
        self.channel = consumer.task_consumer.channel  # this connection's channel: replaced on reconnection
        self.store = store
        self.interval = interval
        self.lease_ms = lease_ms
        self.worker_name = consumer.hostname
        self.keeper = name or keeper_name(consumer.hostname)
        self.claims = DeliveryClaims(store, lease_ms)
        self.interrupted: list[Delivery] = list(interrupted or [])
        # Every delivery seen in the last lease TTL, with when: kombu empties its record when it closes a broken
        # connection (and, if Redis is already back, puts the messages back itself) before Celery tells us the
        # connection was lost — a keeper round in between would otherwise forget them, and their jobs, restarted
        # while still ``running`` here, would count a lost delivery for a Redis blip.
        self.recently_held: dict[str, tuple[Delivery, float]] = {}
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def held(self) -> list[Delivery]:
        """Deliveries of this keeper's connection, including those seen at renewals in the last lease TTL (kombu
        may already have dropped them from its record while closing a broken connection). Handing back one that
        finished meanwhile changes nothing: only a job still ``running`` here is marked interrupted."""
        current = {tag: delivery for tag, (delivery, _) in self.recently_held.items()}
        current.update({d.tag: d for d in held_deliveries(self.channel)})
        return list(current.values())

    def run(self) -> None:
        while True:
            try:
                if self.interrupted:
                    self.hand_back_interrupted()
                self.renew_once()
                self.reclaim_unclaimed()
            except Exception:  # Redis blips: try again next round; the margin is the lease TTL
                log.warning("lease renewal failed", exc_info=True, extra={"worker": self.worker_name})
            if self._stopped.wait(self.interval):
                return

    def renew_once(self) -> int:
        held = held_deliveries(self.channel)
        now = time.monotonic()
        self.recently_held = {tag: seen for tag, seen in self.recently_held.items()
                              if now - seen[1] <= self.lease_ms / 1000}
        self.recently_held.update({d.tag: (d, now) for d in held})
        index = self._index_key()
        tags = [d.tag for d in held] + [d.tag for d in self.interrupted]  # still running: keep them ours
        if tags:
            now = time.time()
            self.store.redis.zadd(index, {tag: now for tag in tags}, xx=True)
        for request in _snapshot(worker_state.reserved_requests):
            # By node: the lease is held by whichever of this node's pool processes runs the job.
            self.store.renew_lease(request.id, self.worker_name, self.lease_ms)
        # After the job leases: the claims lapse no earlier than they do, so a reclaimed job is free to start.
        self.claims.claim(self.keeper, tags)
        return len(tags)

    def reclaim_unclaimed(self) -> list[str]:
        """Puts back, at the front of their queues, deliveries no live worker has claimed for a lease TTL: their
        worker died. Returns the reclaimed delivery tags."""
        ttl = self.lease_ms / 1000
        tags = self.claims.unclaimed(self._index_key(), time.time() - ttl)
        if not tags or self._redis_just_started(ttl):
            return []
        reclaimed = []
        for tag in tags:
            job_id, task_name = self._message_of(tag)
            if task_name == RESTORE_TASK and job_id and self.store.redis.exists(self.store.lease_key(job_id)):
                continue  # set at the job's start, after the delivery: it lapses within a round of the claims
            self.channel.qos.restore_by_tag(tag)
            reclaimed.append(tag)
            metrics.DELIVERIES_RECLAIMED.labels(self._task_of(job_id) if task_name == RESTORE_TASK and job_id
                                                else "other").inc()
            log.warning("delivery of a dead worker reclaimed: no live worker claimed it for the lease TTL", extra={
                "worker": self.worker_name, "task_id": job_id, "task": task_name, "lease_ttl_s": ttl})
        return reclaimed

    def _redis_just_started(self, ttl: float) -> bool:
        """Right after Redis (re)starts every claim has lapsed, yet the workers are alive: they reconnect and hand
        their deliveries back themselves, as interrupted rather than lost. Give them a lease TTL and a round."""
        try:
            uptime = float(self.store.redis.info("server").get("uptime_in_seconds", 0))
        except redis.exceptions.ResponseError:  # INFO refused (a managed Redis's ACL): reclaim as usual
            return False
        return uptime < ttl + self.interval

    def _message_of(self, tag: str) -> tuple[str | None, str | None]:
        raw = self.store.redis.hget(self.channel.global_keyprefix + self.channel.unacked_key, tag)
        try:
            headers = json.loads(raw)[0]["headers"]
            return headers.get("id"), headers.get("task")
        except (TypeError, ValueError, IndexError, KeyError, AttributeError):
            return None, None

    def hand_back_interrupted(self) -> list[str]:
        """Deliveries of the lost connection whose jobs are no longer running here go back: job ``interrupted``
        (not lost), message due now (kombu's next sweep returns it to the front of its queue). Those still running
        stay (their leases and delivery times keep being renewed) until they end."""
        active = {request.id for request in _snapshot(worker_state.active_requests)}
        still_running, handed_back = [], []
        for delivery in self.interrupted:
            if delivery.task_id in active:
                still_running.append(delivery)
                continue
            if delivery.task_name == RESTORE_TASK and delivery.task_id:
                if self.store.interrupt(delivery.task_id, self.worker_name):
                    metrics.INTERRUPTED.labels(self._task_of(delivery.task_id)).inc()
            # Only ever moves a delivery time (xx: a message kombu already put back is left alone).
            self.store.redis.zadd(self._index_key(), {delivery.tag: 0}, xx=True)
            handed_back.append(delivery.task_id or delivery.tag)
        if handed_back:
            # kombu's own sweep, now rather than in up to unacked_restore_interval seconds (when another worker holds
            # the sweep lock, its sweep does the same).
            self.channel.qos.restore_visible(num=max(len(handed_back), 10), interval=1)
            log.info("deliveries interrupted by a broker outage handed back", extra={
                "worker": self.worker_name, "tasks": handed_back, "still_running": len(still_running)})
        self.interrupted = still_running
        return handed_back

    def _task_of(self, job_id: str) -> str:
        task = self.store.redis.hget(self.store.job_key(job_id), "task")
        return task if task in {t.value for t in Task} else "unknown"

    def _index_key(self) -> str:
        return self.channel.global_keyprefix + self.channel.unacked_index_key


class OrphanSweep(threading.Thread):
    """Runs ``OrphanSweeper.sweep`` every ``interval`` seconds (with jitter, so workers spread out)."""

    def __init__(self, sweeper: OrphanSweeper, interval: float) -> None:
        super().__init__(name="imgrestore-orphan-sweep", daemon=True)
        self.sweeper = sweeper
        self.interval = interval
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        while not self._stopped.wait(self.interval * random.uniform(0.75, 1.25)):
            try:
                self.sweeper.sweep_if_my_turn(self.interval)
            except Exception:  # Redis away: the next round tries again
                log.warning("orphan sweep failed", exc_info=True)


class LeaseRenewal(bootsteps.StartStopStep):
    """Consumer bootstep that runs a ``LeaseKeeper`` and the orphan sweep while the consumer is connected."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent, **kwargs) -> None:
        super().__init__(parent, **kwargs)
        self.keeper: LeaseKeeper | None = None
        self.sweep: OrphanSweep | None = None
        self.interrupted: list[Delivery] = []  # held on a connection that was lost; handed back after reconnecting
        self.keeper_name: str | None = None  # kept across reconnections: the interrupted deliveries stay claimed

    def start(self, consumer) -> None:
        settings = get_settings()
        store = job_store(settings)
        self.keeper_name = self.keeper_name or keeper_name(consumer.hostname)
        if self.keeper is not None:  # a restart without a connection loss: the new channel gets a new keeper
            self.keeper.stop()
        self.keeper = LeaseKeeper(consumer, store, settings.lease_renew_interval, int(settings.lease_ttl * 1000),
                                  interrupted=self.interrupted, name=self.keeper_name)
        self.interrupted = []
        if self.keeper.interrupted:
            # Before the consumer's event loop starts fetching: the interrupted jobs are the next deliveries.
            try:
                self.keeper.hand_back_interrupted()
            except Exception:  # Redis away again: the keeper thread tries each round
                log.warning("handing back interrupted deliveries failed; retrying", exc_info=True)
        self.keeper.start()
        self.sweep = OrphanSweep(_sweeper(settings, store, consumer), settings.orphan_sweep_interval)
        self.sweep.start()

    def stop(self, consumer) -> None:
        if self.keeper is not None and consumer.connection is None:
            # Celery drops the connection on a connection error (and keeps it on a shutdown).
            self.keeper.stop()
            self.interrupted = self.keeper.held() + self.keeper.interrupted
            log.warning("broker connection lost; deliveries to hand back after reconnecting",
                        extra={"count": len(self.interrupted)})
            self.keeper = None
        # A warm shutdown stops the consumer before the pool has finished its jobs: the keeper keeps their leases
        # and claims until ``shutdown`` (else a job longer than the lease TTL would be reclaimed and run twice).
        if self.sweep is not None:
            self.sweep.stop()
            self.sweep = None

    def shutdown(self, consumer) -> None:
        self.stop(consumer)
        if self.keeper is not None:
            self.keeper.stop()
            try:
                self.keeper.claims.release(self.keeper.keeper)
            except Exception:  # Redis away: the claims lapse by themselves
                log.warning("claims not released", exc_info=True)
            self.keeper = None


def _sweeper(settings: Settings, store: JobStore, consumer) -> OrphanSweeper:
    submitter = QueueClients.from_settings(settings, app=consumer.app, jobs=store).submitter
    return OrphanSweeper(settings, store, submitter, name=consumer.hostname)
