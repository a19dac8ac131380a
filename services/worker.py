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

import redis  # noqa: E402
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
    send(app, NOTIFY_TASK, [note.url, note.event, note.payload], get_settings().control_queue)


# Redis unavailable mid-job (restart, failover, loading its AOF): the job's state could not be recorded. Failing the
# task would acknowledge — and lose — the job, so it is delivered again instead (if even that cannot be published,
# the message stays unacknowledged and comes back after the visibility timeout).
_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError)


@app.task(name=RESTORE_TASK, bind=True, max_retries=None)
def restore_task(self, payload: dict) -> dict:
    try:
        outcome = runner().run(Job.model_validate(payload), self.request.hostname)
    except _REDIS_DOWN as exc:
        log.warning("job store unreachable, job will be delivered again", extra={"error": str(exc)})
        raise self.retry(countdown=2.0, max_retries=None)
    if isinstance(outcome, RetryLater):
        raise self.retry(countdown=outcome.delay, max_retries=None)
    return outcome


@app.task(name=EXPAND_TASK, bind=True, max_retries=None)
def expand_batch_task(self, batch_id: str, root: str, include: list[str], start_after: str) -> dict:
    """Queues the next pages of a prefix batch, then continues in a new message (never blocks a worker slot)."""
    settings = get_settings()
    job_runner = runner()
    batches = BatchStore(job_runner.store)
    expander = BatchSubmitter(settings, job_runner.store, batches,
                              Submitter(settings, job_runner.store, app), app)
    try:
        cursor = expander.expand_step(batch_id, root, include, start_after, job_runner.restorer.storage,
                                      settings.batch_max_in_flight)
    except TransientError as exc:
        delay = retry_delay(min(self.request.retries, 8), settings.retry_backoff_base, settings.retry_backoff_max)
        log.warning("batch listing failed, retrying", extra={"batch_id": batch_id, "error": exc.message})
        raise self.retry(countdown=delay, max_retries=None)
    except Exception as exc:
        batches.redis.hset(batches.key(batch_id), mapping={"error": str(exc), "sealed": "true"})
        log.error("batch listing failed", extra={"batch_id": batch_id, "error": str(exc)})
        return {"batch_id": batch_id, "error": str(exc)}
    if cursor is None:
        return {"batch_id": batch_id, "sealed": True}
    busy = expander.in_flight(batch_id) >= settings.batch_max_in_flight
    raise self.retry(args=[batch_id, root, include, cursor], countdown=5 if busy else 0, max_retries=None)


@app.task(name=PING_TASK, ignore_result=False)
def ping_task() -> str:
    """Does nothing: proves a worker consumes a queue, and measures the queue's own ceiling (bench/throughput.py)."""
    return "pong"


@app.task(name=NOTIFY_TASK, bind=True, max_retries=None)
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
        raise self.retry(countdown=delay, max_retries=None)
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
