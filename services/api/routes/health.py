"""Unauthenticated operational endpoints: liveness, readiness and Prometheus metrics.

`/metrics` reveals queue names and traffic; serve the API's port on an internal network (or block `/metrics` at
the ingress) — see services/api/README.md.
"""

from __future__ import annotations

import logging

import redis
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ...storage import S3Storage
from ..context import ApiContext, get_ctx
from ..schemas import CheckResult, Health, Readiness
from .common import known_query_only

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"], dependencies=[Depends(known_query_only)])
PROBE_TIMEOUT = 2.0
PROBE_KEY_MS = 10_000
MAX_PROBED_BUCKETS = 5


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
def healthz() -> Health:
    return Health(status="ok")


# Redis refusing writes says why in the first word of its error; readiness reports a stable code for it.
_REDIS_REFUSALS = {
    "OOM": ("redis_oom", "Redis is at maxmemory and refuses writes"),
    "READONLY": ("redis_read_only", "Redis is a read-only replica"),
    "NOREPLICAS": ("redis_no_replicas", "Redis refuses writes: too few replicas (min-replicas-to-write)"),
    "MISCONF": ("redis_error", "Redis refuses writes: its last snapshot failed"),
}


def _failed(reason: str, message: str, exc: BaseException) -> CheckResult:
    """A failed check: a code and a fixed message in the response, the exception only in the log."""
    log.warning("readiness check failed", extra={"reason": reason, "error": f"{type(exc).__name__}: {exc}"})
    return CheckResult(ok=False, reason=reason, error=message)


def _redis_check(ctx: ApiContext) -> CheckResult:
    """Redis answers *and accepts a write*: a Redis at maxmemory (noeviction), a read-only replica or one short of
    its min-replicas still answers PING while every submission fails."""
    client = redis.Redis.from_url(ctx.settings.redis_url, socket_timeout=PROBE_TIMEOUT,
                                  socket_connect_timeout=PROBE_TIMEOUT)
    try:
        client.set(f"{ctx.settings.key_prefix}readyz", "1", px=PROBE_KEY_MS)
        return CheckResult(ok=True)
    except redis.exceptions.ResponseError as exc:
        first = str(exc).split(" ", 1)[0].upper()
        if isinstance(exc, redis.exceptions.OutOfMemoryError):
            first = "OOM"
        elif isinstance(exc, redis.exceptions.ReadOnlyError):
            first = "READONLY"
        reason, message = _REDIS_REFUSALS.get(first, ("redis_error", "Redis refused the probe's write"))
        return _failed(reason, message, exc)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        return _failed("redis_unreachable", "Redis does not answer", exc)
    except redis.exceptions.RedisError as exc:
        return _failed("redis_error", "Redis refused the probe's write", exc)
    finally:
        client.close()


def _probe_client(ctx: ApiContext):
    """A client of its own with short timeouts and no retries: a probe must answer quickly."""
    if ctx.probe_s3 is None:
        quick = ctx.settings.model_copy(update={"s3_connect_timeout": PROBE_TIMEOUT, "s3_read_timeout": PROBE_TIMEOUT,
                                                "s3_max_attempts": 1, "s3_retry_mode": "standard"})
        ctx.probe_s3 = S3Storage(quick).client
    return ctx.probe_s3


def _storage_check(ctx: ApiContext) -> CheckResult:
    """The object store answers: HEAD on the buckets the tokens use (any HTTP answer below 500 counts)."""
    from botocore.exceptions import BotoCoreError, ClientError

    buckets = sorted({entry[len("s3://"):].split("/", 1)[0] for p in ctx.tokens.principals for entry in p.allow})
    client = _probe_client(ctx)
    try:
        if not buckets:
            client.list_buckets()
        for bucket in buckets[:MAX_PROBED_BUCKETS]:
            try:
                client.head_bucket(Bucket=bucket)
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 500
                if status >= 500:
                    raise
        return CheckResult(ok=True)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 500
        if status < 500:
            return CheckResult(ok=True)  # it answered (e.g. 403 for list_buckets): reachable
        return _failed("storage_error", f"the object store answered {status}", exc)
    except (BotoCoreError, OSError) as exc:
        return _failed("storage_unreachable", "the object store does not answer", exc)


@router.get("/readyz", response_model=Readiness, summary="Readiness: Redis and the object store answer",
            responses={503: {"model": Readiness, "description": "A dependency is unreachable"}})
def readyz(ctx: ApiContext = Depends(get_ctx)) -> JSONResponse:
    checks = {"redis": _redis_check(ctx), "storage": _storage_check(ctx)}
    ready = all(c.ok for c in checks.values())
    if not ready:
        log.warning("not ready", extra={name: c.reason for name, c in checks.items() if not c.ok})
    body = Readiness(status="ready" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics (API requests and queue gauges)",
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition format"}})
def metrics(ctx: ApiContext = Depends(get_ctx)) -> Response:
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
