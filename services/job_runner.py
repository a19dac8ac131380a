"""What a worker does with one delivery of a job: job-store state, retry policy, metrics, callbacks.

The pixels are ``restorer.Restorer``'s business; this module decides what a delivery means (first run, retry,
duplicate, redelivery after a lost worker) and what an outcome means (success, retry later, fail now).
"""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass

from . import metrics
from .config import Settings
from .errors import DeliveryLimitError, ImgRestoreError, TransientError
from .jobs import Job, JobError, StageTimings
from .queue.batch_store import BatchStore
from .queue.job_store import JobStore, lease_owner
from .queue.outages import REDIS_DOWN
from .restorer import Restorer
from .webhooks import Notification, finished_notifications

log = logging.getLogger(__name__)


def _node_name(worker: str | None) -> str:
    """The worker node (Celery's hostname, ``name@host``); this host's name outside a worker."""
    return worker or socket.gethostname()


def retry_delay(retries: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: uniformly in [½, 1] × min(cap, base · 2^retries)."""
    ceiling = min(cap, base * (2**retries))
    return ceiling * (rng or random).uniform(0.5, 1.0)


def error_of(exc: BaseException) -> JobError:
    if isinstance(exc, ImgRestoreError):
        return JobError(type=exc.code, message=exc.message, transient=exc.transient)
    return JobError(type="internal", message=f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class RetryLater:
    """The job should be delivered again after ``delay`` seconds (the Celery task raises its retry)."""

    delay: float


class JobRunner:
    def __init__(self, settings: Settings, store: JobStore, restorer: Restorer,
                 notify: Callable[[Notification], None] | None = None) -> None:
        self.settings = settings
        self.store = store
        self.batches = BatchStore(store)
        self.restorer = restorer
        self.notify = notify

    def run(self, job: Job, worker: str | None) -> dict | RetryLater:
        """One delivery on node ``worker``, in this process (the lease's owner). Returns the task result, or
        ``RetryLater``; notifications go through ``self.notify``."""
        settings = self.settings
        holder = lease_owner(_node_name(worker))
        lease_ms = int(settings.lease_ttl * 1000)  # renewed by the node's lease keeper

        outcome = self.store.start(job.id, holder, lease_ms)
        if outcome.status == "missing":  # the record expired or was never written: recreate it from the message
            self.store.create(job, queue=settings.queue_for(job.task.value))
            outcome = self.store.start(job.id, holder, lease_ms)
        if outcome.status == "finished":
            log.info("duplicate delivery of a finished job ignored", extra={"job_id": job.id, "state": outcome.detail})
            return {"id": job.id, "state": outcome.detail, "duplicate": True}
        if outcome.status == "leased":
            log.warning("job is running on another worker; checking again later",
                        extra={"job_id": job.id, "owner": outcome.detail})
            return RetryLater(settings.lease_ttl)  # a dead holder's lease lapses within this

        if outcome.interrupted:
            metrics.INTERRUPTED.labels(job.task.value).inc()
            log.info("previous delivery was ended by a Redis outage, not a lost worker", extra={"job_id": job.id})
        try:
            return self._run_started(job, holder, outcome.attempts, outcome.lost)
        finally:
            try:
                self.store.release_lease(job.id, holder)
            except REDIS_DOWN as exc:
                # The lease lapses by itself; raising here would replace what is propagating — the outcome, the
                # Redis error the task must handle, or the SystemExit of a worker cancelling this job.
                log.warning("lease not released: Redis unavailable", extra={"job_id": job.id, "error": str(exc)})

    def interrupted(self, job: Job, worker: str | None) -> bool:
        """This delivery ended because Redis went away mid-job (it answers again now): the job goes back to
        ``queued``, counted as interrupted, not lost. False when it was not running here (nothing changes)."""
        done = self.store.interrupt(job.id, _node_name(worker))
        if done:
            metrics.INTERRUPTED.labels(job.task.value).inc()
            log.info("delivery interrupted by a Redis outage, job queued again", extra={"job_id": job.id})
        return done

    def _run_started(self, job: Job, holder: str, attempt: int, lost: int) -> dict | RetryLater:
        settings = self.settings
        timings = StageTimings()
        try:
            if lost >= settings.max_lost_deliveries:
                raise DeliveryLimitError(
                    f"the worker running this job was lost {lost} times (limit "
                    f"{settings.max_lost_deliveries}, IMGRESTORE_MAX_LOST_DELIVERIES); the image may exhaust a "
                    "worker's memory — check it, then re-queue it with `imgrestore retry`"
                )
            log.info("job started", extra={"job_id": job.id, "attempt": attempt, "worker": holder})
            done = self.restorer.restore(job, timings)
        except TransientError as exc:
            retries = self.store.get(job.id).retries
            if retries < settings.max_retries:
                retries = self.store.schedule_retry(job.id, error_of(exc))
                delay = retry_delay(retries - 1, settings.retry_backoff_base, settings.retry_backoff_max)
                metrics.RETRIES.labels(job.task.value, exc.code).inc()
                log.warning("transient failure, retrying", extra={
                    "job_id": job.id, "error": exc.message, "retry": retries, "delay_s": round(delay, 2)})
                return RetryLater(delay)
            error = error_of(exc)
            error.message = f"{error.message} (gave up after {retries} retries)"
            return self._failed(job, error, timings)
        except Exception as exc:  # permanent: bad input, unknown model, or a bug — this job fails, the worker goes on
            if not isinstance(exc, ImgRestoreError):
                log.exception("unexpected error in job", extra={"job_id": job.id})
            return self._failed(job, error_of(exc), timings)

        if self.store.succeed(job.id, done.result, done.timings, done.provider):
            metrics.record_job(job.task.value, "succeeded", done.timings.model_dump(), done.result.megapixels)
            self._after_finish(job)
        return {"id": job.id, "state": "succeeded", "output_url": job.output_url}

    def fail(self, job: Job, error: JobError) -> dict:
        """Fails a job from outside its delivery (the hard time limit's watchdog, while the delivery is stuck):
        recorded, counted and notified like any failure."""
        return self._failed(job, error, StageTimings())

    def _failed(self, job: Job, error: JobError, timings: StageTimings) -> dict:
        if self.store.fail(job.id, error, timings):
            metrics.record_job(job.task.value, "failed", timings.model_dump(), None, reason=error.type)
            log.warning("job failed", extra={"job_id": job.id, "error_type": error.type, "error": error.message})
            self._after_finish(job)
        return {"id": job.id, "state": "failed", "error": error.model_dump()}

    def _after_finish(self, job: Job) -> None:
        if self.notify is None:
            return
        for note in finished_notifications(self.store, self.batches, job):
            self.notify(note)
