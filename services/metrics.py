"""Prometheus metric definitions, shared by workers and the API.

Workers run jobs in pool child processes, so their metrics use prometheus_client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, set by ``imgrestore worker`` before any child starts) and the worker's main process
serves them on ``IMGRESTORE_METRICS_PORT``. Queue gauges are computed from Redis at scrape time by
``QueueCollector`` (served by the API's ``/metrics``; KEDA scales on ``imgrestore_queue_backlog``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:  # the queue collector reads Redis; recording a job's metrics (documents, embedded runs) does not
    from .queue.job_store import JobStore

log = logging.getLogger(__name__)

STAGES = ("download", "decode", "infer", "model_wait", "encode", "upload")
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

JOBS = Counter("imgrestore_jobs", "Jobs finished, by task and final state.", ["task", "state"])
FAILURES = Counter("imgrestore_job_failures", "Failed jobs by task and reason (error type).", ["task", "reason"])
RETRIES = Counter("imgrestore_job_retries", "Retries scheduled after transient errors.", ["task", "reason"])
STAGE_SECONDS = Histogram("imgrestore_stage_seconds", "Seconds per job stage.", ["task", "stage"],
                          buckets=_SECONDS_BUCKETS)
JOB_SECONDS = Histogram("imgrestore_job_seconds", "Seconds per job, all stages.", ["task"], buckets=_SECONDS_BUCKETS)
INTERRUPTED = Counter("imgrestore_deliveries_interrupted", "Deliveries ended by a Redis outage and queued again "
                      "(not counted as lost).", ["task"])
ORPHANS_REQUEUED = Counter("imgrestore_orphans_requeued", "Jobs found running with no lease and no message, re-queued.",
                           ["task"])
DELIVERIES_RECLAIMED = Counter("imgrestore_deliveries_reclaimed", "Deliveries of dead workers put back on their queue "
                               "once no live worker claimed them for the lease TTL.", ["task"])
MEGAPIXELS = Counter("imgrestore_megapixels", "Megapixels restored.", ["task"])
PAGES = Counter("imgrestore_document_pages", "Pages of PDF and multi-page TIFF jobs, by task and what happened to "
                "them (restored, passed_through: born-digital PDF pages).", ["task", "outcome"])
MODEL_LOAD_SECONDS = Gauge("imgrestore_model_load_seconds", "Seconds the last load of each model took.",
                           ["model", "provider"], multiprocess_mode="max")
PROVIDER = Gauge("imgrestore_provider_info", "Execution provider of each loaded model (value 1).",
                 ["model", "provider"], multiprocess_mode="max")


def record_job(task: str, state: str, timings: dict[str, float | None], megapixels: float | None,
               reason: str | None = None) -> None:
    JOBS.labels(task, state).inc()
    if reason:
        FAILURES.labels(task, reason).inc()
    for stage in STAGES:
        seconds = timings.get(stage)
        if seconds is not None:
            STAGE_SECONDS.labels(task, stage).observe(seconds)
    total = sum(v for v in timings.values() if v is not None)
    if total:
        JOB_SECONDS.labels(task).observe(total)
    if megapixels:
        MEGAPIXELS.labels(task).inc(megapixels)


def record_model_load(model: str, provider: str, seconds: float) -> None:
    MODEL_LOAD_SECONDS.labels(model, provider).set(seconds)
    PROVIDER.labels(model, provider).set(1)


class QueueCollector(Collector):
    """Per queue, from Redis: depth (waiting), in flight (delivered, not yet acknowledged), their sum, and the age
    of the job that has waited longest and of the one that has run longest (what "jobs wait too long" alerts on)."""

    def __init__(self, store: JobStore, queues: list[str], unacked_key: str = "unacked",
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.queues = queues
        self.unacked_key = unacked_key
        self.clock = clock

    def collect(self):
        from .queue import depth  # imports the Redis client: only processes that serve queue gauges pay for it

        depth_family = GaugeMetricFamily("imgrestore_queue_depth", "Jobs waiting in each queue.", labels=["queue"])
        flight = GaugeMetricFamily("imgrestore_queue_in_flight", "Jobs delivered to workers, not yet acknowledged.",
                                   labels=["queue"])
        backlog = GaugeMetricFamily("imgrestore_queue_backlog", "Waiting + in flight: what autoscaling follows.",
                                    labels=["queue"])
        waited = GaugeMetricFamily("imgrestore_queue_oldest_waiting_seconds", "Seconds the job that has waited "
                                   "longest in each queue has been queued (since created, retried or re-queued); "
                                   "0 when no job waits.", labels=["queue"])
        ran = GaugeMetricFamily("imgrestore_queue_oldest_running_seconds", "Seconds the longest-running job of each "
                                "queue has been running; 0 when none runs.", labels=["queue"])
        client = self.store.redis
        running = depth.in_flight_ids_by_queue(client, self.unacked_key)
        waiting = {queue: depth.waiting(client, queue) for queue in self.queues}
        ages = depth.job_ages(self.store, waiting, running, self.clock())
        for queue in self.queues:
            in_flight = len(running.get(queue, []))
            depth_family.add_metric([queue], waiting[queue])
            flight.add_metric([queue], in_flight)
            backlog.add_metric([queue], waiting[queue] + in_flight)
            waited.add_metric([queue], round(ages[queue].oldest_waiting, 3))
            ran.add_metric([queue], round(ages[queue].oldest_running, 3))
        yield from (depth_family, flight, backlog, waited, ran)


class RedisMemoryCollector(Collector):
    """Redis memory in use and its ``maxmemory``, from ``INFO memory``: with ``noeviction`` a full Redis refuses
    every write (submissions, job updates, queue moves), so the headroom is alerted on (deploy/prometheus)."""

    def __init__(self, client) -> None:
        self.client = client

    def collect(self):
        used = GaugeMetricFamily("imgrestore_redis_memory_used_bytes", "Memory Redis uses (INFO used_memory).")
        limit = GaugeMetricFamily("imgrestore_redis_memory_max_bytes",
                                  "Redis maxmemory; 0 when unset (then the host's memory is the limit).")
        try:
            info = self.client.info("memory")
        except Exception as exc:  # an outage or a client without INFO: the families stay, empty
            log.debug("Redis memory unavailable", extra={"error": str(exc)})
        else:
            used.add_metric([], float(info.get("used_memory", 0)))
            limit.add_metric([], float(info.get("maxmemory", 0)))
        yield from (used, limit)


def record_pages(task: str, restored: int, passed_through: int) -> None:
    PAGES.labels(task, "restored").inc(restored)
    PAGES.labels(task, "passed_through").inc(passed_through)
