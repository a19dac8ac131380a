"""A point-in-time picture of the service for operators: queues, workers, throughput, recent failures."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from celery import Celery

from .config import Settings
from .jobs import Job, Task
from .jobstore import JobStore
from . import queues


@dataclass
class WorkerInfo:
    name: str
    active: int
    processed: int | None = None


@dataclass
class Snapshot:
    taken_at: float
    queues: dict[str, dict[str, int]]  # queue -> {"waiting": n, "in_flight": n}
    workers: list[WorkerInfo]
    finished: dict[str, int]  # final state -> count since Redis started
    failures: list[Job] = field(default_factory=list)
    recovery: dict[str, int] = field(default_factory=dict)  # interrupted deliveries, orphans re-queued


class Monitor:
    def __init__(self, settings: Settings, store: JobStore, app: Celery) -> None:
        self.settings = settings
        self.store = store
        self.app = app
        self.queue_names = [settings.queue_for(t.value) for t in Task] + [settings.control_queue]

    def workers(self, timeout: float = 1.0) -> list[WorkerInfo]:
        inspector = self.app.control.inspect(timeout=timeout)
        active = inspector.active() or {}
        stats = inspector.stats() or {}
        names = sorted(set(active) | set(stats))
        return [WorkerInfo(name, len(active.get(name) or []),
                           sum((stats.get(name) or {}).get("total", {}).values()) if name in stats else None)
                for name in names]

    def snapshot(self, failures: int = 8, worker_timeout: float = 1.0) -> Snapshot:
        in_flight = queues.in_flight_by_queue(self.store.redis)
        depths = {q: {"waiting": queues.waiting(self.store.redis, q), "in_flight": in_flight.get(q, 0)}
                  for q in self.queue_names}
        recent = []
        for job_id in self.store.dead_letters(limit=failures):
            try:
                recent.append(self.store.get(job_id))
            except Exception:
                continue
        return Snapshot(time.time(), depths, self.workers(worker_timeout), self.store.finished_counts(), recent,
                        self.store.recovery_counts())


def throughput(previous: Snapshot | None, current: Snapshot) -> float | None:
    """Jobs finished per second between two snapshots."""
    if previous is None or current.taken_at <= previous.taken_at:
        return None
    done = sum(current.finished.values()) - sum(previous.finished.values())
    return max(done, 0) / (current.taken_at - previous.taken_at)
