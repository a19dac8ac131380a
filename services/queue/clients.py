"""What a process needs to use the queue, built in one place from ``Settings``.

The API, the worker, the CLI verbs and the benches take their job store, batch store and submitters from here (and
the queue names from ``celery_app.queue_names``), so a new setting (a TTL, a prefix) reaches all of them at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery

from ..config import Settings
from .batch_store import BatchStore
from .celery_app import create_app
from .job_store import JobStore
from .submission import BatchSubmitter, Submitter


def job_store(settings: Settings) -> JobStore:
    return JobStore.from_url(settings.redis_url, settings.key_prefix, settings.job_ttl_seconds)


@dataclass(frozen=True)
class QueueClients:
    settings: Settings
    app: Celery
    jobs: JobStore
    batches: BatchStore
    submitter: Submitter
    batch_submitter: BatchSubmitter

    @classmethod
    def from_settings(cls, settings: Settings, app: Celery | None = None,
                      jobs: JobStore | None = None) -> "QueueClients":
        """``app``: the process's Celery app when it has one (the worker's); ``jobs``: a store it already holds."""
        app = app or create_app(settings)
        jobs = jobs or job_store(settings)
        batches = BatchStore(jobs)
        submitter = Submitter(settings, jobs, app)
        return cls(settings, app, jobs, batches, submitter, BatchSubmitter(settings, jobs, batches, submitter, app))
