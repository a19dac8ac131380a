"""The FastAPI application: ``create_app(settings)``; served by ``imgrestore api`` (uvicorn)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from celery import Celery
from fastapi import FastAPI

from ..config import Settings, get_settings
from ..queue.celery_app import queue_names
from ..queue.clients import QueueClients
from ..storage import StorageRouter
from . import errors
from .auth import parse_tokens
from .context import ApiContext
from .idempotency import IdempotencyStore
from .limits import BodyLimitMiddleware
from .observability import ApiMetrics, ObservabilityMiddleware
from .quotas import SubmissionRate
from .routes import batches, health, jobs, ui
from .thumbnails import ThumbnailCache, Thumbnailer

log = logging.getLogger(__name__)

API_VERSION = "1.0.0"
DESCRIPTION = """Submit image-restoration jobs and batches, follow their progress, cancel queued jobs.

Every `/v1` call needs `Authorization: Bearer <token>` (tokens and their allowed `s3://` prefixes come from
`IMGRESTORE_API_TOKENS`). `/healthz`, `/readyz` and `/metrics` are unauthenticated: keep the API's port on an
internal network or block `/metrics` at the ingress. Errors are `{"error": {"type": ..., "message": ...}}`.
"""


def create_app(settings: Settings | None = None, celery_app: Celery | None = None) -> FastAPI:
    settings = settings or get_settings()
    tokens = parse_tokens(settings.api_tokens)  # a malformed setting fails here, at startup
    clients = QueueClients.from_settings(settings, app=celery_app)
    store = clients.jobs
    storage = StorageRouter(settings)
    metrics = ApiMetrics(store, queue_names(settings))
    ctx = ApiContext(
        settings=settings, tokens=tokens, redis=store.redis, jobs=store, batches=clients.batches,
        submitter=clients.submitter, batch_submitter=clients.batch_submitter, celery=clients.app,
        storage=storage,
        idempotency=IdempotencyStore(store.redis, settings.key_prefix, settings.api_idempotency_ttl_seconds),
        thumbnails=Thumbnailer(storage, min(settings.api_thumbnail_max_pixels, settings.max_pixels),
                               settings.api_thumbnail_max_bytes, ThumbnailCache(),
                               concurrency=settings.api_thumbnail_concurrency, job_max_pixels=settings.max_pixels),
        metrics=metrics,
        submission_rate=SubmissionRate(store.redis, settings.key_prefix, settings.api_submissions_per_minute_per_token),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not tokens:
            log.warning("IMGRESTORE_API_TOKENS is not set: every /v1 request will be refused with 401")
        else:
            log.info("API started", extra={"token_names": [p.name for p in tokens.principals]})
        yield

    app = FastAPI(title="imgrestore API", version=API_VERSION, description=DESCRIPTION, lifespan=lifespan,
                  # Swagger UI loads its script from a CDN: off unless asked for (IMGRESTORE_API_DOCS).
                  docs_url="/docs" if settings.api_docs else None, redoc_url=None, openapi_url="/openapi.json")
    app.state.ctx = ctx
    errors.install(app)
    for module in (jobs, batches, health, ui):
        app.include_router(module.router)
    app.state.route_methods = [(route.path_regex, route.methods) for module in (jobs, batches, health, ui)
                               for route in module.router.routes if getattr(route, "methods", None)]
    ui.mount_static(app)
    # Starlette runs the last-added middleware first: observability sees everything, 413s included.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.api_max_request_bytes)
    app.add_middleware(ObservabilityMiddleware, metrics=metrics)
    return app


def create_app_from_env() -> FastAPI:
    """uvicorn's factory (``imgrestore api``): settings from the environment."""
    return create_app()
