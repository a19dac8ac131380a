"""Celery worker: ``celery -A services.worker worker`` (or ``imgrestore worker``).

Tasks are thin: ``imgrestore.restore`` hands a job to ``job_runner.JobRunner``; ``imgrestore.expand_batch`` lists a
batch's S3 prefix a few pages at a time; ``imgrestore.notify`` hands a webhook to the process's sender threads
(``webhooks.CallbackSender``: off the restore slots, retried with backoff). Metrics from the pool's child processes
are aggregated (prometheus_client multiprocess mode) and served by the main process.

Stages overlap across the pool's processes (issue 12): with ``IMGRESTORE_MODEL_SLOTS`` set, only that many run the
model at once and the others download, decode, encode and upload meanwhile — see ``inference/slots.py``. The slots'
lock files are made by the main process before it forks the pool, so every pool process shares them.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

# Multiprocess metrics need the folder before prometheus_client is first imported, in this process and its children.
_OWN_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="imgrestore-metrics-")
    if "prometheus_client.values" in sys.modules:
        # `imgrestore worker` imports every verb's module first, and some import prometheus_client, which then chose
        # its single-process value class: the pool children's counts never reached /metrics. Every metric here is
        # labelled, so its values are made at first use, after this switch.
        from prometheus_client import values

        values.ValueClass = values.get_value_class()

from celery import signals  # noqa: E402

from . import metrics, webhooks  # noqa: E402
from .config import get_settings  # noqa: E402
from .errors import TransientError  # noqa: E402
from .inference.registry import LoadedModel, ModelRegistry  # noqa: E402
from .inference.slots import ModelSlots  # noqa: E402
from .job_runner import JobRunner, RetryLater, error_of, retry_delay  # noqa: E402
from .jobs import Job  # noqa: E402
from .logs import configure_logging  # noqa: E402
from .queue.celery_app import NOTIFY_TASK, RESTORE_TASK, app, send  # noqa: E402
from .queue.clients import QueueClients, job_store  # noqa: E402
from .queue.leases import LeaseRenewal  # noqa: E402
from .queue.outages import (REDIS_DOWN, OutageSafeRequest, RedisUnavailable, abandon_delivery,  # noqa: E402
                            patiently, retry_task)
from .queue.submission import EXPAND_TASK  # noqa: E402
from .restorer import Restorer  # noqa: E402
from .time_limits import HardLimitWatchdog, JobClock  # noqa: E402
from .webhooks import Notification  # noqa: E402

log = logging.getLogger(__name__)

PING_TASK = "imgrestore.ping"
app.steps["consumer"].add(LeaseRenewal)

_runner: JobRunner | None = None
# The worker's model slots, made in the main process at start (``_make_model_slots``) and inherited by its pool.
_model_slots: ModelSlots | None = None


def runner() -> JobRunner:
    """One per worker process: model sessions and storage clients are created once, after the fork."""
    global _runner
    if _runner is None:
        settings = get_settings()

        def loaded(model: LoadedModel) -> None:
            metrics.record_model_load(model.qualified_name, model.provider, model.load_seconds)
            restorer.warm_up(model)  # memory at its working size from the first job on (bench/soak.py)

        registry = ModelRegistry.from_settings(settings, on_load=loaded)
        restorer = Restorer(settings, registry=registry, model_slots=_model_slots,
                            watchdog=HardLimitWatchdog(_past_hard_limit))
        _runner = JobRunner(settings, job_store(settings), restorer, notify=_send_notification)
    return _runner


# Exit status of a pool process ended by a job's hard time limit (Celery logs it; the pool starts a new process).
HARD_LIMIT_EXIT_STATUS = 75


def _past_hard_limit(job: Job, clock: JobClock) -> None:
    """The watchdog's thread, while the job's own thread is stuck: record the failure (bounded: a stuck Redis must
    not keep the process alive), then end the process. The message comes back (the pool process was lost) and is
    dropped as a duplicate of a finished job."""
    recorder = threading.Thread(target=lambda: runner().fail(job, error_of(clock.hard_limit_error())), daemon=True)
    recorder.start()
    recorder.join(timeout=10.0)
    logging.shutdown()
    os._exit(HARD_LIMIT_EXIT_STATUS)


_clients: QueueClients | None = None


def clients() -> QueueClients:
    """The process's stores and submitters (on the runner's job store), for the batch-listing task."""
    global _clients
    if _clients is None:
        _clients = QueueClients.from_settings(get_settings(), app=app, jobs=runner().store)
    return _clients


def _send_notification(note: Notification) -> None:
    settings = get_settings()
    try:
        patiently(lambda: note.queue(app, settings.control_queue),
                  runner().store.redis, settings.redis_outage_wait, "webhook task")
    except RedisUnavailable as exc:  # the job itself is final and recorded: only its webhook is lost
        log.error("webhook not queued: Redis unavailable", extra={"url": webhooks.redact_url(note.url),
                                                                   "event": note.event, "error": str(exc)})


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
    expander = clients().batch_submitter
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
        error = str(exc)
        try:  # sealed with the reason; its jobs may all have ended already (then its webhook goes now)
            patiently(lambda: expander.seal(batch_id, listing_error=error), client, settings.redis_outage_wait,
                      "batch record")
        except RedisUnavailable as gone:
            abandon_delivery(EXPAND_TASK, self.request.id, gone)
        log.error("batch listing failed", extra={"batch_id": batch_id, "error": error})
        return {"batch_id": batch_id, "error": error}
    if cursor is None:
        return {"batch_id": batch_id, "sealed": True}
    raise retry_task(self, 5 if busy else 0, client, settings.redis_outage_wait,
                     args=[batch_id, root, include, cursor])


@app.task(name=PING_TASK, ignore_result=False)
def ping_task() -> str:
    """Does nothing: proves a worker consumes a queue, and measures the queue's own ceiling (bench/throughput.py)."""
    return "pong"


@app.task(name=NOTIFY_TASK, bind=True, max_retries=None, Request=OutageSafeRequest)
def notify_task(self, url: str, event: str, payload: dict, attempt: int = 0) -> dict:
    """Hands the webhook to this process's sender threads and returns at once: a slow receiver never holds a
    restore slot. When every sender is busy, the task comes back a second later (backpressure via the broker)."""
    settings = get_settings()
    if not sender().offer(url, event, payload, attempt):
        raise retry_task(self, 1.0, runner().store.redis, settings.redis_outage_wait)
    return {"url": webhooks.redact_url(url), "event": event, "attempt": attempt, "handed_off": True}


_sender: webhooks.CallbackSender | None = None


def sender() -> webhooks.CallbackSender:
    """One per worker process, created after the fork (threads do not survive one)."""
    global _sender
    if _sender is None:
        _sender = webhooks.CallbackSender(_deliver, threads=get_settings().callback_sender_threads)
    return _sender


def _deliver(url: str, event: str, payload: dict, attempt: int) -> None:
    """One attempt, in a sender thread; a failure worth retrying is published again with backoff."""
    settings = get_settings()
    secret = settings.callback_secret.get_secret_value() if settings.callback_secret else None
    shown = {"url": webhooks.redact_url(url), "event": event, "attempt": attempt + 1}
    try:
        status = webhooks.post(url, event, payload, secret, settings.callback_egress)
    except webhooks.CallbackRefused as exc:
        log.error("webhook refused", extra={**shown, "error": str(exc)})
        return
    except webhooks.CallbackFailed as exc:
        if attempt + 1 >= settings.callback_max_attempts:
            log.error("webhook given up", extra={**shown, "error": str(exc)})
            return
        delay = retry_delay(attempt, settings.retry_backoff_base, settings.retry_backoff_max)
        log.warning("webhook failed, retrying", extra={**shown, "error": str(exc), "retry_in": round(delay, 2)})
        try:
            send(app, NOTIFY_TASK, [url, event, payload, attempt + 1], settings.control_queue, countdown=delay)
        except Exception as gone:  # the broker is away: the job is final and recorded, only its webhook is lost
            log.error("webhook retry not queued", extra={**shown, "error": str(gone)})
        return
    if 200 <= status < 300:
        log.info("webhook delivered", extra={**shown, "status": status})
    else:
        log.warning("webhook not accepted (redirects are not followed)" if 300 <= status < 400 else
                    "webhook refused by its receiver", extra={**shown, "status": status})


@signals.setup_logging.connect
def _setup_logging(**_: object) -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


@signals.worker_init.connect
def _make_model_slots(**_: object) -> None:
    global _model_slots
    count = get_settings().model_slots
    if count:
        _model_slots = ModelSlots(Path(tempfile.mkdtemp(prefix="imgrestore-model-slots-")), count)
        log.info("model slots", extra={"slots": count, "folder": str(_model_slots.directory)})


@signals.worker_init.connect
def _serve_metrics(**_: object) -> None:
    settings = get_settings()
    port, host = settings.metrics_port, settings.metrics_host
    if not port:
        return
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    try:
        start_http_server(port, addr=host, registry=registry)
        log.info("worker metrics served", extra={"host": host, "port": port})
    except OSError as exc:  # another worker on this host has the port: run without an endpoint
        log.warning("worker metrics endpoint not started", extra={"port": port, "error": str(exc)})


@signals.worker_process_shutdown.connect
def _forget_child_metrics(pid: int | None = None, **_: object) -> None:
    from prometheus_client import multiprocess

    if _sender is not None:  # attempts under way finish (each within IMGRESTORE_CALLBACK_TIMEOUT)
        _sender.close(wait=True)
    multiprocess.mark_process_dead(pid or os.getpid())


@signals.worker_shutdown.connect
def _remove_metrics_dir(**_: object) -> None:
    if _model_slots is not None:
        shutil.rmtree(_model_slots.directory, ignore_errors=True)
    if _OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
