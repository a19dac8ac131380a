"""Request metrics, a structured access log and request ids, as ASGI middleware.

Metrics live in a registry of the API's own (the default registry holds the worker's metrics) and are labelled with
route templates (``/v1/jobs/{job_id}``), never raw paths, so their cardinality stays bounded. The access log has
the route, status, duration and the caller's token *name*; never headers, so never a token.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..metrics import QueueCollector, RedisMemoryCollector
from ..queue.job_store import JobStore

log = logging.getLogger("services.api.access")
_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _SafeQueueCollector(Collector):
    """Queue gauges from Redis; a Redis outage turns into ``imgrestore_api_queue_metrics_up 0``, not a failed scrape."""

    def __init__(self, inner: QueueCollector) -> None:
        self.inner = inner

    def collect(self):
        up = GaugeMetricFamily("imgrestore_api_queue_metrics_up", "1 when the queue gauges could be read from Redis.")
        try:
            families = list(self.inner.collect())
        except Exception as exc:  # any Redis error: report it through the gauge
            log.warning("queue metrics unavailable", extra={"error": str(exc)})
            families = []
        up.add_metric([], 1 if families else 0)
        yield up
        yield from families


class ApiMetrics:
    def __init__(self, store: JobStore, queues: list[str]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("imgrestore_api_requests", "API requests by method, route template and status.",
                                ["method", "route", "status"], registry=self.registry)
        self.seconds = Histogram("imgrestore_api_request_seconds", "API request duration by route template.",
                                 ["route"], buckets=_BUCKETS, registry=self.registry)
        self.registry.register(_SafeQueueCollector(QueueCollector(store, queues)))
        self.registry.register(RedisMemoryCollector(store.redis))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.seconds.labels(route).observe(seconds)


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else "unmatched"


class ObservabilityMiddleware:
    """Outermost: sees every response (413s and 500s included), adds X-Request-Id and baseline security headers."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-Id"] = request_id
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            seconds = time.perf_counter() - started
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            route = route_template(scope)
            self.metrics.observe(method, route, status, seconds)
            principal = scope.get("state", {}).get("principal")
            log.info("request", extra={"method": method, "route": route, "path": scope["path"], "status": status,
                                       "duration_ms": round(seconds * 1000, 2), "request_id": request_id,
                                       "principal": principal})
