"""Bearer tokens: secure by default, constant-time matching, allow-lists, and tokens that never reach a log."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.api import create_app
from services.api.auth import parse_tokens
from services.errors import ConfigurationError
from tests.api.conftest import OPS, OTHER, auth, make_settings

pytestmark = pytest.mark.integration

JOB = {"task": "denoise", "input_url": "s3://scans/in/p1.png"}


def test_without_configured_tokens_every_v1_call_is_refused_but_probes_answer(redis_url):
    with TestClient(create_app(make_settings(redis_url, api_tokens=None))) as client:
        for method, path in [("get", "/v1/jobs"), ("get", "/v1/batches"), ("get", "/v1/jobs/abc")]:
            response = getattr(client, method)(path, headers=auth())
            assert response.status_code == 401, path
            assert "IMGRESTORE_API_TOKENS" in response.json()["error"]["message"]
        response = client.post("/v1/jobs", json=JOB, headers=auth())
        assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
        assert client.get("/healthz").status_code == 200
        assert client.get("/metrics").status_code == 200
        assert client.get("/ui").status_code == 200


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer nope-not-a-token-at-all"},
    {"Authorization": f"Basic {OPS}"},
    {"Authorization": f"Bearer {OPS}x"},
    {"Authorization": f"Bearer {OPS[:-1]}"},
])
def test_missing_or_wrong_tokens_get_401(client, headers):
    response = client.post("/v1/jobs", json=JOB, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "unauthorized"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="imgrestore"'


@pytest.mark.parametrize("body, field", [
    ({"task": "denoise", "input_url": "s3://elsewhere/in/p1.png"}, "input_url"),
    ({"task": "denoise", "input_url": "s3://archive/out/p1.png"}, "input_url"),  # archive/in/ only
    ({"task": "denoise", "input_url": "s3://scans/p1.png", "output_url": "s3://elsewhere/p1.png"}, "output_url"),
    ({"task": "denoise", "input_url": "s3://scans2/p1.png"}, "input_url"),  # a bucket merely starting alike
])
def test_urls_outside_the_allow_list_get_403(client, body, field):
    response = client.post("/v1/jobs", json=body, headers=auth())
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["type"] == "forbidden" and error["message"].startswith(field) and "'ops'" in error["message"]


def test_a_token_acts_only_inside_its_own_allow_list(client):
    assert client.post("/v1/jobs", json=JOB, headers=auth(OTHER)).status_code == 403
    assert client.post("/v1/jobs", json={"task": "colorize", "input_url": "s3://other-bucket/a.png"},
                       headers=auth(OTHER)).status_code == 201
    assert client.post("/v1/jobs", json={"task": "colorize", "input_url": "s3://archive/in/a.png"},
                       headers=auth()).status_code == 201


def test_batches_check_every_input_and_output_against_the_allow_list(client):
    inside = {"task": "denoise", "inputs": ["s3://scans/a.png", "s3://elsewhere/b.png"]}
    response = client.post("/v1/batches", json=inside, headers=auth())
    assert response.status_code == 403 and "inputs[1]" in response.json()["error"]["message"]
    out = {"task": "denoise", "inputs": ["s3://scans/a.png"], "output_prefix": "s3://elsewhere/clean/"}
    assert client.post("/v1/batches", json=out, headers=auth()).status_code == 403
    prefix = {"task": "denoise", "prefix": "s3://archive/"}  # the token has archive/in/ only
    assert client.post("/v1/batches", json=prefix, headers=auth()).status_code == 403
    prefix_out = {"task": "denoise", "prefix": "s3://scans/2019/", "output_prefix": "s3://archive/out/"}
    assert client.post("/v1/batches", json=prefix_out, headers=auth()).status_code == 403


def test_tokens_never_reach_the_logs(redis_url, caplog):
    with caplog.at_level(logging.DEBUG), TestClient(create_app(make_settings(redis_url))) as client:
        assert client.post("/v1/jobs", json=JOB, headers=auth()).status_code == 201
        assert client.get("/v1/jobs", headers=auth(OTHER)).status_code == 200
        assert client.get("/v1/jobs", headers={"Authorization": "Bearer wrong-token-123456789"}).status_code == 401
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    access = [r for r in caplog.records if r.name == "services.api.access"]
    assert len(access) == 3 and {r.__dict__["principal"] for r in access} == {"ops", "other", None}
    for secret in (OPS, OTHER, "wrong-token-123456789"):
        assert secret not in text


def test_token_table_matches_exactly_and_reports_bad_config_without_the_token():
    table = parse_tokens(SecretStr(json.dumps({OPS: {"name": "ops", "allow": ["s3://scans"]}})))
    assert table.match(OPS).name == "ops"
    assert table.match(OPS).allow == ("s3://scans/",)  # a bare bucket means the whole bucket
    assert table.match(OPS + " ") is None and table.match("") is None
    assert not parse_tokens(None) and not parse_tokens(SecretStr("  "))

    bad = [
        ({"short": {"name": "a"}}, "shorter than 16"),
        ({OPS: {"name": "a", "allow": ["/data/"]}}, "allow"),
        ({OPS: {"name": "a", "allow": ["s3://bk1/../x"]}}, "'..'"),
        ({OPS: {"name": "a"}, OTHER: {"name": "a"}}, "two tokens are named 'a'"),
        ({OPS: {"name": "a", "admin": True}}, "admin"),
        ([OPS], "JSON object"),
    ]
    for config, expected in bad:
        with pytest.raises(ConfigurationError) as info:
            parse_tokens(SecretStr(json.dumps(config)))
        assert expected in info.value.message and OPS not in info.value.message and OTHER not in info.value.message
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        parse_tokens(SecretStr("{" + OPS))


def test_imgrestore_api_refuses_a_malformed_token_setting_without_printing_it(redis_url):
    import os
    import subprocess
    import sys

    env = {**os.environ, "IMGRESTORE_REDIS_URL": redis_url,
           "IMGRESTORE_API_TOKENS": json.dumps({OPS: {"name": "ops", "allow": ["/etc/"]}})}
    result = subprocess.run([sys.executable, "-m", "services.cli", "api", "--port", "0"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "IMGRESTORE_API_TOKENS entry #1" in result.stderr and "allow" in result.stderr
    assert OPS not in result.stdout + result.stderr
