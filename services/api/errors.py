"""HTTP errors: one JSON shape for every failure, ``{"error": {"type": ..., "message": ...}}``.

Our domain exceptions (``services.errors``) map to status codes here, so routes just raise them. Bad input is always
a 4xx; a 5xx means the service or one of its dependencies (Redis, the object store) failed.
"""

from __future__ import annotations

import logging
from typing import Any

import kombu.exceptions
import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    BatchNotFoundError,
    ImgRestoreError,
    InputNotFoundError,
    JobNotFoundError,
    QueueFullError,
    StorageAccessError,
    TransientError,
)

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    type: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    """An error a route or dependency answers with directly (auth, limits, conflicts)."""

    def __init__(self, status: int, type: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.headers = headers


def error_response(status: int, type: str, message: str, headers: dict[str, str] | None = None,
                   details: list[dict[str, Any]] | None = None) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(type=type, message=message, details=details))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


# Seconds a client is told to wait: a dependency that failed usually comes back within seconds; a full queue
# drains at the workers' pace.
RETRY_AFTER_UNAVAILABLE = "5"
RETRY_AFTER_QUEUE_FULL = "30"


def status_of(exc: ImgRestoreError) -> int:
    if isinstance(exc, JobNotFoundError | BatchNotFoundError | InputNotFoundError):
        return 404
    if isinstance(exc, QueueFullError):
        return 429  # backpressure: the service works, it holds as many waiting jobs as it was sized for
    if isinstance(exc, TransientError):
        return 503  # the store timed out or throttled: worth retrying later
    if isinstance(exc, StorageAccessError):
        return 502  # the store refused the API's own credentials: not the client's fault
    return 422  # invalid job, unsupported URL, undecodable image: the request itself is wrong


_HTTP_TYPES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 406: "not_acceptable",
               413: "request_too_large", 415: "unsupported_media_type"}


def _validation_message(errors: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    parts, details = [], []
    for error in errors[:20]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
        details.append({"loc": [str(p) for p in error.get("loc", ())], "msg": str(error.get("msg", "")),
                        "type": str(error.get("type", ""))})
    return "; ".join(parts) or "invalid request", details


def _methods_of(request: Request) -> list[str]:
    """Every method any route of this path answers (``app.state.route_methods``, built by ``create_app``)."""
    methods: set[str] = set()
    for regex, route_methods in getattr(request.app.state, "route_methods", ()):
        if regex.match(request.url.path):
            methods |= set(route_methods)
    return sorted(methods)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.type, exc.message, exc.headers)

    @app.exception_handler(ImgRestoreError)
    async def _domain_error(request: Request, exc: ImgRestoreError) -> JSONResponse:
        status = status_of(exc)
        if status >= 500:
            log.warning("dependency failed", extra={"error_type": exc.code, "error": exc.message})
        retry_after = str(getattr(exc, "retry_after", RETRY_AFTER_QUEUE_FULL))  # a quota knows when it frees
        headers = {"Retry-After": retry_after} if status == 429 else \
            {"Retry-After": RETRY_AFTER_UNAVAILABLE} if status == 503 else None
        return error_response(status, exc.code, exc.message, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, details = _validation_message(list(exc.errors()))
        return error_response(422, "validation", message, details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # Starlette lists one route's methods; a path may have several routes
            headers["Allow"] = ", ".join(_methods_of(request))
        return error_response(exc.status_code, _HTTP_TYPES.get(exc.status_code, "http_error"), message,
                              headers=headers or None)

    @app.exception_handler(redis.exceptions.RedisError)
    async def _redis_down(request: Request, exc: redis.exceptions.RedisError) -> JSONResponse:
        log.warning("job store unavailable", extra={"error": str(exc)})
        return error_response(503, "store_unavailable", "the job store (Redis) is unavailable; retry later",
                              headers={"Retry-After": RETRY_AFTER_UNAVAILABLE})

    @app.exception_handler(kombu.exceptions.KombuError)
    async def _broker_down(request: Request, exc: kombu.exceptions.KombuError) -> JSONResponse:
        # A publish through Celery (batch expansion, webhooks of a cancelled job) gave up on the broker.
        log.warning("broker unavailable", extra={"error": str(exc)})
        return error_response(503, "queue_unavailable", "the queue (Redis) refused the message; retry later",
                              headers={"Retry-After": RETRY_AFTER_UNAVAILABLE})

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return error_response(500, "internal", "internal error; the server log has the details")
