"""The API in-process (Starlette's TestClient) against a real Redis (db 15, a key prefix per module); no worker,
no S3: these tests cover what the API itself decides (auth, validation, limits, idempotency, listing, cancel)."""

from __future__ import annotations

import json
import uuid

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.api import create_app
from services.config import Settings

OPS = "ops-token-0123456789abcdef"
OTHER = "other-token-0123456789abcdef"
TOKENS = {
    OPS: {"name": "ops", "allow": ["s3://scans/", "s3://archive/in/"]},
    OTHER: {"name": "other", "allow": ["s3://other-bucket/"]},
}


def auth(token: str = OPS) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_settings(redis_url: str, **overrides) -> Settings:
    fields = {
        "redis_url": redis_url,
        "key_prefix": f"apitest-{uuid.uuid4().hex[:8]}:",
        "queue_prefix": f"a{uuid.uuid4().hex[:8]}.",
        "api_tokens": SecretStr(json.dumps(TOKENS)),
        "s3_endpoint_url": "http://127.0.0.1:9",  # nothing listens: storage is "unreachable" here
        "metrics_port": 0,
        "api_max_batch_inputs": 5,
        "api_max_request_bytes": 4096,
    }
    return Settings(**(fields | overrides))


@pytest.fixture(scope="module")
def api_settings(redis_url: str) -> Settings:
    return make_settings(redis_url)


@pytest.fixture(scope="module")
def client(api_settings: Settings):
    with TestClient(create_app(api_settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def ctx(client: TestClient):
    return client.app.state.ctx
