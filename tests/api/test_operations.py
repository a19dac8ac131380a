"""Unauthenticated probes and metrics, the status page's static files, and the committed OpenAPI schema."""

from __future__ import annotations

import json

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from services.api import create_app
from services.api.openapi import COMMITTED, current_schema, render
from tests.api.conftest import auth, make_settings
from tests.support.chaos import RedisServer

pytestmark = pytest.mark.integration


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_reports_an_unreachable_object_store(client):
    response = client.get("/readyz")  # the module's settings point S3 at a closed port
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["checks"]["redis"] == {"ok": True, "reason": None, "error": None}
    assert body["checks"]["storage"] == {"ok": False, "reason": "storage_unreachable",
                                         "error": "the object store does not answer"}  # no exception text


@pytest.fixture()
def own_redis(tmp_path):
    """``own_redis(*options)``: a redis-server of this test's own (stopped afterwards)."""
    servers: list[RedisServer] = []

    def start(*options: str) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(servers)}", options=options)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):  # a replica before its primary: it would otherwise retry the primary
        server.stop()


@pytest.mark.parametrize("refusal", ["oom", "read_only", "no_replicas"])
def test_readyz_fails_while_redis_answers_pings_but_refuses_writes(own_redis, refusal):
    primary = own_redis()
    if refusal == "oom":
        target = primary
        redis.Redis(port=primary.port).config_set("maxmemory", 1)  # below what it already uses: noeviction refuses
    elif refusal == "read_only":
        target = own_redis("--replicaof", "127.0.0.1", str(primary.port))
    else:
        target = own_redis("--min-replicas-to-write", "1")
    assert redis.Redis(port=target.port).ping()  # what /readyz used to check
    with TestClient(create_app(make_settings(target.url)), raise_server_exceptions=False) as client:
        body = client.get("/readyz").json()
        assert body["checks"]["redis"]["ok"] is False and body["checks"]["redis"]["reason"] == f"redis_{refusal}"
        assert "Error" not in body["checks"]["redis"]["error"]  # a fixed message, not the exception
        response = client.post("/v1/jobs", json={"task": "denoise", "input_url": "s3://scans/r.png"}, headers=auth())
        assert response.status_code == 503 and response.headers["Retry-After"]
        assert response.json()["error"]["type"] == "store_unavailable"


def test_readyz_and_submissions_report_an_unreachable_redis(redis_url):
    settings = make_settings("redis://127.0.0.1:9/0")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.get("/readyz")
        assert response.status_code == 503 and response.json()["checks"]["redis"]["ok"] is False
        assert response.json()["checks"]["redis"]["reason"] == "redis_unreachable"
        response = client.get("/v1/jobs", headers=auth())
        assert response.status_code == 503 and response.json()["error"]["type"] == "store_unavailable"
        metrics = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
        assert metrics["imgrestore_api_queue_metrics_up"].samples[0].value == 0
        assert "imgrestore_queue_depth" not in metrics


def _families(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def test_metrics_count_requests_by_route_template_and_expose_queue_gauges(client, ctx):
    for _ in range(3):
        client.get("/v1/jobs/abc123", headers=auth())  # 404: unknown
    client.get("/v1/jobs/def456", headers=auth())
    client.post("/v1/jobs", json={"task": "denoise", "input_url": "s3://scans/m.png"}, headers=auth())
    families = _families(client)
    requests = {(s.labels["method"], s.labels["route"], s.labels["status"]): s.value
                for s in families["imgrestore_api_requests"].samples if s.name.endswith("_total")}
    assert requests[("GET", "/v1/jobs/{job_id}", "404")] >= 4
    assert requests[("POST", "/v1/jobs", "201")] >= 1
    assert not any("abc123" in route for _, route, _ in requests)  # templates, not raw paths
    histogram = families["imgrestore_api_request_seconds"]
    counts = [s for s in histogram.samples if s.name.endswith("_count") and s.labels["route"] == "/v1/jobs/{job_id}"]
    assert counts and counts[0].value >= 4

    depth = {s.labels["queue"]: s.value for s in families["imgrestore_queue_depth"].samples}
    denoise = ctx.settings.queue_for("denoise")
    assert set(depth) == {ctx.settings.queue_for(t) for t in ("denoise", "colorize", "watermark")} | {
        ctx.settings.control_queue}
    assert depth[denoise] == ctx.redis.llen(denoise) >= 1
    backlog = {s.labels["queue"]: s.value for s in families["imgrestore_queue_backlog"].samples}
    assert backlog[denoise] >= depth[denoise]
    assert families["imgrestore_api_queue_metrics_up"].samples[0].value == 1


def test_every_response_carries_a_request_id(client):
    response = client.get("/healthz", headers={"X-Request-Id": "trace-42"})
    assert response.headers["X-Request-Id"] == "trace-42"
    generated = client.get("/healthz", headers={"X-Request-Id": "bad id with spaces"}).headers["X-Request-Id"]
    assert generated != "bad id with spaces" and len(generated) == 32
    assert client.get("/healthz").headers["X-Content-Type-Options"] == "nosniff"


def test_the_status_page_is_static_and_locked_down(client):
    page = client.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert '<script src="/ui/static/app.js">' in page.text and "<script>" not in page.text  # no inline script
    script = client.get("/ui/static/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "sessionStorage" in script.text and "Authorization" in script.text
    assert "?token=" not in script.text  # the token travels in a header, never in a query string
    assert client.get("/ui/static/app.css").status_code == 200
    assert client.get("/", follow_redirects=False).headers["location"] == "/ui"


def test_committed_openapi_schema_is_current(client):
    served = client.get("/openapi.json").json()
    assert served == json.loads(COMMITTED.read_text()), (
        "services/api/openapi.json is out of date: run python -m services.api.openapi --write")
    assert render(current_schema()) == COMMITTED.read_text()
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/batches", "/v1/batches/{batch_id}", "/healthz", "/readyz",
            "/metrics"} <= set(served["paths"])
    assert served["components"]["securitySchemes"]["bearerAuth"]["scheme"].lower() == "bearer"


def test_the_api_imports_neither_torch_nor_onnxruntime():
    import subprocess
    import sys

    code = ("import sys; from services.api.app import create_app; from services.config import Settings; "
            "create_app(Settings()); heavy = [m for m in ('torch', 'onnxruntime') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_metrics_expose_redis_memory_and_its_limit(own_redis):
    server = own_redis()
    redis.Redis(port=server.port).config_set("maxmemory", 64 * 1024 * 1024)
    with TestClient(create_app(make_settings(server.url))) as client:
        families = _families(client)
    used = families["imgrestore_redis_memory_used_bytes"].samples[0].value
    assert 0 < used < 64 * 1024 * 1024
    assert families["imgrestore_redis_memory_max_bytes"].samples[0].value == 64 * 1024 * 1024
