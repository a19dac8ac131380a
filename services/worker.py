"""Celery worker: ``celery -A services.worker worker`` (or ``imgrestore worker``).

Tasks are thin: ``imgrestore.restore`` hands a job to ``execution.JobRunner``; ``imgrestore.expand_batch`` lists a
batch's S3 prefix a few pages at a time; ``imgrestore.notify`` delivers a webhook with retries. Metrics from the
pool's child processes are aggregated (prometheus_client multiprocess mode) and served by the main process.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

# Multiprocess metrics need the folder before prometheus_client is first imported, in this process and its children.
_OWN_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="imgrestore-metrics-")

from celery import signals  # noqa: E402

from . import callbacks, metrics  # noqa: E402
from .batches import BatchStore  # noqa: E402
from .batching import EXPAND_TASK, BatchSubmitter  # noqa: E402
from .celery_app import NOTIFY_TASK, RESTORE_TASK, app, send  # noqa: E402
from .config import get_settings  # noqa: E402
from .errors import TransientError  # noqa: E402
from .execution import JobRunner, RetryLater, retry_delay  # noqa: E402
from .notifications import Notification  # noqa: E402
from .jobs import Job  # noqa: E402
from .jobstore import JobStore  # noqa: E402
from .leases import LeaseRenewal  # noqa: E402
from .logs import configure_logging  # noqa: E402
from .outages import (REDIS_DOWN, OutageSafeRequest, RedisUnavailable, abandon_delivery, patiently,  # noqa: E402
                      retry_task)
from .pipeline import Restorer  # noqa: E402
from .registry import ModelRegistry  # noqa: E402
from .submission import Submitter  # noqa: E402

log = logging.getLogger(__name__)

PING_TASK = "imgrestore.ping"
app.steps["consumer"].add(LeaseRenewal)

_runner: JobRunner | None = None


def runner() -> JobRunner:
    """One per worker process: model sessions and storage clients are created once, after the fork."""
    global _runner
    if _runner is None:
        settings = get_settings()
        registry = ModelRegistry.from_settings(
            settings, on_load=lambda m: metrics.record_model_load(m.qualified_name, m.provider, m.load_seconds))
        store = JobStore.from_url(settings.redis_url, settings.key_prefix, settings.job_ttl_seconds)
        _runner = JobRunner(settings, store, Restorer(settings, registry=registry), notify=_send_notification)
    return _runner


def _send_notification(note: Notification) -> None:
    settings = get_settings()
    try:
        patiently(lambda: send(app, NOTIFY_TASK, [note.url, note.event, note.payload], settings.control_queue),
                  runner().store.redis, settings.redis_outage_wait, "webhook task")
    except RedisUnavailable as exc:  # the job itself is final and recorded: only its webhook is lost
        log.error("webhook not queued: Redis unavailable", extra={"url": note.url, "event": note.event,
                                                                   "error": str(exc)})


# Every retry below goes through ``outages.retry_task``, never ``self.retry``: Celery's retry turns a failed publish
# into Reject(requeue=False), deleting the message while its job (or batch listing, or webhook) is unfinished.


@app.task(name=RESTORE_TASK, bind=True, max_retries=None, Request=OutageSafeRequest)
def restore_task(self, payload: dict) -> dict:
    job = Job.model_validate(payload)
    job_runner = runner()
    settings = job_runner.settings
    try:
        outcome = job_runner.run(job, self.request.hostname)
    except REDIS_DOWN as exc:
        # The job store went away mid-job. Wait for it, then put the job back as interrupted (not lost) and deliver
        # it again; if Redis stays away, end this process and leave the message unacknowledged.
        log.warning("job store unreachable mid-job, waiting for Redis", extra={"job_id": job.id, "error": str(exc)})
        try:
            patiently(lambda: job_runner.interrupted(job, self.request.hostname), job_runner.store.redis,
                      settings.redis_outage_wait, "job store")
        except RedisUnavailable as gone:
            abandon_delivery(RESTORE_TASK, job.id, gone)
        outcome = RetryLater(0.0)
    if isinstance(outcome, RetryLater):
        raise retry_task(self, outcome.delay, job_runner.store.redis, settings.redis_outage_wait)
    return outcome


@app.task(name=EXPAND_TASK, bind=True, max_retries=None, Request=OutageSafeRequest)
def expand_batch_task(self, batch_id: str, root: str, include: list[str], start_after: str) -> dict:
    """Queues the next pages of a prefix batch, then continues in a new message (never blocks a worker slot)."""
    settings = get_settings()
    job_runner = runner()
    batches = BatchStore(job_runner.store)
    expander = BatchSubmitter(settings, job_runner.store, batches,
                              Submitter(settings, job_runner.store, app), app)
    client = job_runner.store.redis
    try:
        cursor = expander.expand_step(batch_id, root, include, start_after, job_runner.restorer.storage,
                                      settings.batch_max_in_flight)
        busy = cursor is not None and expander.in_flight(batch_id) >= settings.batch_max_in_flight
    except TransientError as exc:
        delay = retry_delay(min(self.request.retries, 8), settings.retry_backoff_base, settings.retry_backoff_max)
        log.warning("batch listing failed, retrying", extra={"batch_id": batch_id, "error": exc.message})
        raise retry_task(self, delay, client, settings.redis_outage_wait)
    except REDIS_DOWN as exc:
        # Listing again from the same cursor is harmless: membership makes adding an input idempotent.
        log.warning("Redis unavailable while listing a batch, continuing later",
                    extra={"batch_id": batch_id, "error": str(exc)})
        raise retry_task(self, 1.0, client, settings.redis_outage_wait)
    except Exception as exc:
        try:
            patiently(lambda: batches.record_listing_error(batch_id, str(exc)), client, settings.redis_outage_wait,
                      "batch record")
        except RedisUnavailable as gone:
            abandon_delivery(EXPAND_TASK, self.request.id, gone)
        log.error("batch listing failed", extra={"batch_id": batch_id, "error": str(exc)})
        return {"batch_id": batch_id, "error": str(exc)}
    if cursor is None:
        return {"batch_id": batch_id, "sealed": True}
    raise retry_task(self, 5 if busy else 0, client, settings.redis_outage_wait,
                     args=[batch_id, root, include, cursor])


@app.task(name=PING_TASK, ignore_result=False)
def ping_task() -> str:
    """Does nothing: proves a worker consumes a queue, and measures the queue's own ceiling (bench/throughput.py)."""
    return "pong"


@app.task(name=NOTIFY_TASK, bind=True, max_retries=None, Request=OutageSafeRequest)
def notify_task(self, url: str, event: str, payload: dict) -> dict:
    settings = get_settings()
    secret = settings.callback_secret.get_secret_value() if settings.callback_secret else None
    try:
        status = callbacks.post(url, event, payload, secret, settings.callback_timeout)
    except callbacks.CallbackFailed as exc:
        if self.request.retries + 1 >= settings.callback_max_attempts:
            log.error("webhook given up", extra={"url": url, "event": event, "error": str(exc)})
            return {"url": url, "delivered": False, "error": str(exc)}
        delay = retry_delay(self.request.retries, settings.retry_backoff_base, settings.retry_backoff_max)
        raise retry_task(self, delay, runner().store.redis, settings.redis_outage_wait)
    return {"url": url, "delivered": status < 400, "status": status}


@signals.setup_logging.connect
def _setup_logging(**_: object) -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


@signals.worker_init.connect
def _serve_metrics(**_: object) -> None:
    port = get_settings().metrics_port
    if not port:
        return
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    try:
        start_http_server(port, registry=registry)
        log.info("worker metrics served", extra={"port": port})
    except OSError as exc:  # another worker on this host has the port: run without an endpoint
        log.warning("worker metrics endpoint not started", extra={"port": port, "error": str(exc)})


@signals.worker_process_shutdown.connect
def _forget_child_metrics(pid: int | None = None, **_: object) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid or os.getpid())


@signals.worker_shutdown.connect
def _remove_metrics_dir(**_: object) -> None:
    if _OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
