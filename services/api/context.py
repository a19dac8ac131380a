"""Everything a request handler needs, built once per app from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import Redis
from celery import Celery
from fastapi import Request

from ..config import Settings
from ..queue.batch_store import BatchStore
from ..queue.job_store import JobStore
from ..queue.submission import BatchSubmitter, Submitter
from ..storage import StorageRouter
from .auth import TokenTable
from .idempotency import IdempotencyStore
from .observability import ApiMetrics
from .quotas import SubmissionRate
from .thumbnails import Thumbnailer

@dataclass
class ApiContext:
    settings: Settings
    tokens: TokenTable
    redis: Redis
    jobs: JobStore
    batches: BatchStore
    submitter: Submitter
    batch_submitter: BatchSubmitter
    celery: Celery
    storage: StorageRouter
    idempotency: IdempotencyStore
    thumbnails: Thumbnailer
    metrics: ApiMetrics
    submission_rate: SubmissionRate
    probe_s3: Any = None  # readiness probe's own S3 client (short timeouts), made on first use


def get_ctx(request: Request) -> ApiContext:
    return request.app.state.ctx
