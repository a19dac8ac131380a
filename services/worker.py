"""Celery worker: ``celery -A services.worker worker`` (or ``imgrestore worker``).

The task is a thin wrapper around ``pipeline.Restorer``: it records state in the job store and applies the retry
policy — transient errors retried with exponential backoff and jitter, permanent ones failed at once, deliveries
whose worker died counted and capped.
"""

from __future__ import annotations

import logging
import os
import random

from celery import signals

from .celery_app import RESTORE_TASK, app
from .config import get_settings
from .errors import DeliveryLimitError, ImgRestoreError, TransientError
from .jobs import Job, JobError, StageTimings
from .jobstore import JobStore
from .leases import LeaseRenewal
from .logs import configure_logging
from .pipeline import Restorer

log = logging.getLogger(__name__)

app.steps["consumer"].add(LeaseRenewal)

_restorer: Restorer | None = None
_store: JobStore | None = None


def restorer() -> Restorer:
    """One per worker process: model sessions and storage clients are created once, after the fork."""
    global _restorer
    if _restorer is None:
        _restorer = Restorer(get_settings())
    return _restorer


def job_store() -> JobStore:
    global _store
    if _store is None:
        settings = get_settings()
        _store = JobStore.from_url(settings.redis_url, settings.key_prefix, settings.job_ttl_seconds)
    return _store


def retry_delay(retries: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: uniformly in [½, 1] × min(cap, base · 2^retries)."""
    ceiling = min(cap, base * (2**retries))
    return ceiling * (rng or random).uniform(0.5, 1.0)


def error_of(exc: BaseException) -> JobError:
    if isinstance(exc, ImgRestoreError):
        return JobError(type=exc.code, message=exc.message, transient=exc.transient)
    return JobError(type="internal", message=f"{type(exc).__name__}: {exc}")


@app.task(name=RESTORE_TASK, bind=True, max_retries=None)
def restore_task(self, payload: dict) -> dict:
    job = Job.model_validate(payload)
    return execute(self, job)


def execute(task, job: Job) -> dict:
    settings = get_settings()
    store = job_store()
    worker = task.request.hostname or f"pid-{os.getpid()}"
    lease_ms = settings.visibility_timeout * 1000

    outcome = store.start(job.id, worker, lease_ms)
    if outcome.status == "missing":  # the record expired or was never written: recreate it from the message
        store.create(job)
        outcome = store.start(job.id, worker, lease_ms)
    if outcome.status == "finished":
        log.info("duplicate delivery of a finished job ignored", extra={"job_id": job.id, "state": outcome.detail})
        return {"id": job.id, "state": outcome.detail, "duplicate": True}
    if outcome.status == "leased":
        log.warning("job is running on another worker; checking again later",
                    extra={"job_id": job.id, "owner": outcome.detail})
        raise task.retry(countdown=settings.visibility_timeout, max_retries=None)

    try:
        if outcome.lost >= settings.max_lost_deliveries:
            raise DeliveryLimitError(
                f"the worker running this job was lost {outcome.lost} times (limit "
                f"{settings.max_lost_deliveries}, IMGRESTORE_MAX_LOST_DELIVERIES); the image may exhaust a "
                "worker's memory — check it, then re-queue it with `imgrestore retry`"
            )
        timings = StageTimings()
        log.info("job started", extra={"job_id": job.id, "attempt": outcome.attempts, "worker": worker})
        try:
            done = restorer().restore(job, timings)
        except TransientError as exc:
            stored = store.get(job.id)
            if stored.retries < settings.max_retries:
                retries = store.schedule_retry(job.id, error_of(exc))
                delay = retry_delay(retries - 1, settings.retry_backoff_base, settings.retry_backoff_max)
                log.warning("transient failure, retrying", extra={"job_id": job.id, "error": exc.message,
                                                                    "retry": retries, "delay_s": round(delay, 2)})
                raise task.retry(countdown=delay, max_retries=None)
            error = error_of(exc)
            error.message = f"{error.message} (gave up after {stored.retries} retries)"
            store.fail(job.id, error, timings)
            log.error("job failed after retries", extra={"job_id": job.id, "error": error.message})
            return {"id": job.id, "state": "failed", "error": error.model_dump()}
        except Exception as exc:  # permanent: bad input, unknown model, or a bug — this job fails, the worker goes on
            error = error_of(exc)
            store.fail(job.id, error, timings)
            level = logging.WARNING if isinstance(exc, ImgRestoreError) else logging.ERROR
            log.log(level, "job failed", exc_info=not isinstance(exc, ImgRestoreError),
                    extra={"job_id": job.id, "error_type": error.type, "error": error.message})
            return {"id": job.id, "state": "failed", "error": error.model_dump()}
        store.succeed(job.id, done.result, done.timings, done.provider)
        return {"id": job.id, "state": "succeeded", "output_url": job.output_url}
    except DeliveryLimitError as exc:
        store.fail(job.id, error_of(exc))
        log.error("job dead-lettered", extra={"job_id": job.id, "error": exc.message})
        return {"id": job.id, "state": "failed", "error": error_of(exc).model_dump()}
    finally:
        store.release_lease(job.id, worker)


@signals.setup_logging.connect
def _setup_logging(**_: object) -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
