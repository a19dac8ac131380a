"""A point-in-time picture of the service for operators: queues, workers, throughput, recent failures."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from celery import Celery

from .config import Settings
from .jobs import Job
from .queue import depth
from .queue.celery_app import queue_names, task_queue_names
from .queue.job_store import JobStore


@dataclass
class WorkerInfo:
    name: str
    active: int
    processed: int | None = None


@dataclass
class Snapshot:
    taken_at: float
    # queue -> {"waiting": n, "in_flight": n, "oldest_waiting_s": s, "oldest_running_s": s} (ages 0: none)
    queues: dict[str, dict[str, float]]
    workers: list[WorkerInfo]
    finished: dict[str, int]  # final state -> count since Redis started
    failures: list[Job] = field(default_factory=list)
    recovery: dict[str, int] = field(default_factory=dict)  # interrupted deliveries, orphans re-queued
    throughput: dict[str, "QueueRate"] = field(default_factory=dict)  # queue -> finished over the window
    window_seconds: float = 0.0  # the throughput window
    seconds: float = 0.0  # how long the snapshot took


@dataclass
class QueueRate:
    """Jobs finished in the last ``window_seconds`` (by finish time, on Redis's clock)."""

    succeeded: int = 0
    failed: int = 0
    megapixels: float = 0.0
    jobs_per_s: float = 0.0
    megapixels_per_s: float = 0.0


class Monitor:
    def __init__(self, settings: Settings, store: JobStore, app: Celery) -> None:
        self.settings = settings
        self.store = store
        self.app = app
        self.queue_names = queue_names(settings)

    def expected_workers(self) -> int | None:
        """Workers bound to the control exchange (kombu keeps one binding per worker's pidbox queue in Redis).
        A worker killed without a goodbye leaves its binding: then the inspection waits its full timeout."""
        key = f"_kombu.binding.{self.app.conf.control_exchange}.pidbox"
        try:
            return int(self.store.redis.scard(key)) or None
        except Exception:  # not a Redis broker, or no such key: wait the full timeout
            return None

    def workers(self, timeout: float = 1.0) -> list[WorkerInfo]:
        # A broadcast has no end: without ``limit`` each question waits its whole timeout (the two of them made a
        # snapshot take 2.9 s). With the number of workers as limit it returns at the last reply; both questions go
        # out at once.
        limit = self.expected_workers()
        inspector = self.app.control.inspect(timeout=timeout, limit=limit)
        with ThreadPoolExecutor(2) as pool:
            asked = pool.submit(inspector.active), pool.submit(inspector.stats)
            active, stats = (future.result() or {} for future in asked)
        names = sorted(set(active) | set(stats))
        return [WorkerInfo(name, len(active.get(name) or []),
                           sum((stats.get(name) or {}).get("total", {}).values()) if name in stats else None)
                for name in names]

    def throughput(self, window: float = 300.0, limit: int = 50_000) -> dict[str, QueueRate]:
        """Per queue: jobs and megapixels finished over the last ``window`` seconds, from the job store's
        finished-jobs indexes (scored by finish time) and the records' task and result (one pipelined read)."""
        redis = self.store.redis
        now = float(redis.time()[0])
        ids: list[tuple[str, str]] = []
        for state in ("succeeded", "failed"):
            key = self.store.state_prefix + state
            ids += [(state, job_id) for job_id in redis.zrangebyscore(key, now - window, "+inf", start=0, num=limit)]
        with redis.pipeline(transaction=False) as pipe:
            for _, job_id in ids:
                pipe.hmget(self.store.job_key(job_id), "task", "result")
            fields = pipe.execute()
        rates = {name: QueueRate() for name in task_queue_names(self.settings)}
        for (state, _), (task, result) in zip(ids, fields):
            rate = rates.get(self.settings.queue_for(task)) if task else None
            if rate is None:
                continue  # expired record
            if state == "succeeded":
                rate.succeeded += 1
                try:
                    rate.megapixels += float(json.loads(result)["megapixels"]) if result else 0.0
                except (ValueError, KeyError, TypeError):
                    pass
            else:
                rate.failed += 1
        for rate in rates.values():
            rate.megapixels = round(rate.megapixels, 3)
            rate.jobs_per_s = round((rate.succeeded + rate.failed) / window, 3)
            rate.megapixels_per_s = round(rate.megapixels / window, 3)
        return rates

    def snapshot(self, failures: int = 8, worker_timeout: float = 1.0, window: float = 300.0) -> Snapshot:
        started = time.perf_counter()
        with ThreadPoolExecutor(1) as pool:  # the workers' replies come while Redis is read
            asked = pool.submit(self.workers, worker_timeout)
            snapshot = self._redis_part(failures, window)
            snapshot.workers = asked.result()
        snapshot.seconds = round(time.perf_counter() - started, 3)
        return snapshot

    def _redis_part(self, failures: int, window: float) -> Snapshot:
        in_flight = depth.in_flight_ids_by_queue(self.store.redis)
        waiting = {q: depth.waiting(self.store.redis, q) for q in self.queue_names}
        ages = depth.job_ages(self.store, waiting, in_flight, time.time())
        depths = {q: {"waiting": waiting[q], "in_flight": len(in_flight.get(q, [])),
                      "oldest_waiting_s": round(ages[q].oldest_waiting, 1),
                      "oldest_running_s": round(ages[q].oldest_running, 1)}
                  for q in self.queue_names}
        recent = []
        for job_id in self.store.dead_letters(limit=failures):
            try:
                recent.append(self.store.get(job_id))
            except Exception:
                continue
        return Snapshot(time.time(), depths, [], self.store.finished_counts(), recent, self.store.recovery_counts(),
                        self.throughput(window), window)


def throughput(previous: Snapshot | None, current: Snapshot) -> float | None:
    """Jobs finished per second between two snapshots."""
    if previous is None or current.taken_at <= previous.taken_at:
        return None
    done = sum(current.finished.values()) - sum(previous.finished.values())
    return max(done, 0) / (current.taken_at - previous.taken_at)
