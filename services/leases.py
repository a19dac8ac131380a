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

The same bootstep runs the orphan sweep (``services.recovery``) in every worker.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass

from celery import bootsteps
from celery.worker import state as worker_state

from . import metrics
from .celery_app import RESTORE_TASK
from .config import Settings, get_settings
from .jobs import Task
from .jobstore import JobStore
from .recovery import OrphanSweeper
from .submission import Submitter

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


class LeaseKeeper(threading.Thread):
    def __init__(self, consumer, store: JobStore, interval: float, lease_ms: int,
                 interrupted: list[Delivery] | None = None) -> None:
        super().__init__(name="imgrestore-lease-keeper", daemon=True)
        self.consumer = consumer
        self.channel = consumer.task_consumer.channel  # this connection's channel: replaced on reconnection
        self.store = store
        self.interval = interval
        self.lease_ms = lease_ms
        self.worker_name = consumer.hostname
        self.interrupted: list[Delivery] = list(interrupted or [])
        self.last_held: list[Delivery] = []
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def held(self) -> list[Delivery]:
        """Deliveries of this keeper's connection, including those seen at the last renewal (kombu may already
        have dropped them from its record while closing a broken connection)."""
        current = {d.tag: d for d in self.last_held}
        current.update({d.tag: d for d in held_deliveries(self.channel)})
        return list(current.values())

    def run(self) -> None:
        while True:
            try:
                if self.interrupted:
                    self.hand_back_interrupted()
                self.renew_once()
            except Exception:  # Redis blips: try again next round; the margin is visibility_timeout
                log.warning("lease renewal failed", exc_info=True, extra={"worker": self.worker_name})
            if self._stopped.wait(self.interval):
                return

    def renew_once(self) -> int:
        held = held_deliveries(self.channel)
        self.last_held = held
        index = self._index_key()
        tags = [d.tag for d in held] + [d.tag for d in self.interrupted]  # still running: keep them ours
        if tags:
            now = time.time()
            self.store.redis.zadd(index, {tag: now for tag in tags}, xx=True)
        for request in _snapshot(worker_state.reserved_requests):
            self.store.renew_lease(request.id, self.worker_name, self.lease_ms)
        return len(tags)

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

    def start(self, consumer) -> None:
        settings = get_settings()
        store = JobStore.from_url(settings.redis_url, settings.key_prefix, settings.job_ttl_seconds)
        self.keeper = LeaseKeeper(consumer, store, settings.lease_renew_interval, settings.visibility_timeout * 1000,
                                  interrupted=self.interrupted)
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
        if self.keeper is not None:
            self.keeper.stop()
            if consumer.connection is None:  # Celery drops it on a connection error, keeps it on a shutdown
                self.interrupted = self.keeper.held() + self.keeper.interrupted
                log.warning("broker connection lost; deliveries to hand back after reconnecting",
                            extra={"count": len(self.interrupted)})
            self.keeper = None
        if self.sweep is not None:
            self.sweep.stop()
            self.sweep = None

    shutdown = stop


def _sweeper(settings: Settings, store: JobStore, consumer) -> OrphanSweeper:
    return OrphanSweeper(settings, store, Submitter(settings, store, consumer.app), name=consumer.hostname)
