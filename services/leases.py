"""Lease renewal: a live worker keeps every job it holds from being delivered to anyone else.

kombu's Redis transport keeps each unacknowledged message in the ``unacked`` hash with its delivery time in the
``unacked_index`` sorted set; any worker's periodic sweep puts messages older than ``visibility_timeout`` back on
their queue. This thread, in the worker's main process, moves the delivery time of every message the worker still
holds (running, reserved or waiting for a retry countdown) to "now", and extends the job-store lease of every
reserved job. So the visibility timeout can be short (quick redelivery after a crash) without ever redelivering a
job that is merely slow: only a worker that stopped renewing — a dead one — loses its messages.
"""

from __future__ import annotations

import logging
import threading
import time

from celery import bootsteps
from celery.worker import state as worker_state

from .config import get_settings
from .jobstore import JobStore

log = logging.getLogger(__name__)


def _snapshot(collection) -> list:
    """Copies a dict/set that the consumer thread may change while we read it."""
    for _ in range(5):
        try:
            return list(collection)
        except RuntimeError:  # changed size during iteration
            continue
    return []


class LeaseKeeper(threading.Thread):
    def __init__(self, consumer, store: JobStore, interval: float, lease_ms: int) -> None:
        super().__init__(name="imgrestore-lease-keeper", daemon=True)
        self.consumer = consumer
        self.store = store
        self.interval = interval
        self.lease_ms = lease_ms
        self.worker_name = consumer.hostname
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self.renew_once()
            except Exception:  # Redis blips: try again next round; the margin is visibility_timeout
                log.warning("lease renewal failed", exc_info=True, extra={"worker": self.worker_name})

    def renew_once(self) -> int:
        channel = self.consumer.task_consumer.channel
        tags = _snapshot(channel.qos._delivered)
        if tags:
            index = channel.global_keyprefix + channel.unacked_index_key
            now = time.time()
            self.store.redis.zadd(index, {tag: now for tag in tags}, xx=True)
        for request in _snapshot(worker_state.reserved_requests):
            self.store.renew_lease(request.id, self.worker_name, self.lease_ms)
        return len(tags)


class LeaseRenewal(bootsteps.StartStopStep):
    """Consumer bootstep that runs a ``LeaseKeeper`` while the consumer is connected."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent, **kwargs) -> None:
        super().__init__(parent, **kwargs)
        self.keeper: LeaseKeeper | None = None

    def start(self, consumer) -> None:
        settings = get_settings()
        store = JobStore.from_url(settings.redis_url, settings.key_prefix, settings.job_ttl_seconds)
        self.keeper = LeaseKeeper(consumer, store, settings.lease_renew_interval, settings.visibility_timeout * 1000)
        self.keeper.start()

    def stop(self, consumer) -> None:
        if self.keeper is not None:
            self.keeper.stop()
            self.keeper = None

    shutdown = stop
