"""Bad input is a 4xx with a message, never a 5xx: URL rules, schema errors, size limits."""

from __future__ import annotations

import pytest

from tests.api.conftest import auth

pytestmark = pytest.mark.integration


def _job(**fields) -> dict:
    return {"task": "denoise", "input_url": "s3://scans/in/p1.png"} | fields


@pytest.mark.parametrize("url, message", [
    ("/data/scans/p1.png", "local path"),
    ("scans/p1.png", "local path"),
    ("file:///data/p1.png", "unsupported scheme 'file'"),
    ("ftp://host/p1.png", "unsupported scheme 'ftp'"),
    ("https://example.com/p1.png", "unsupported scheme 'https'"),
    ("s3://scans/../secret/p1.png", "'..'"),
    ("s3://scans/in/./p1.png", "'.'"),
    ("s3://scans/in/..", "'..'"),
    ("s3://scans/in/p1.png?versionId=1", "'?'"),
    ("s3://scans/in/p1.png#x", "'#'"),
    ("s3://scans/in\\p1.png", "backslash"),
    ("s3://scans/in/p1\n.png", "control"),
    ("s3://Scans/p1.png", "not a valid bucket name"),
    ("s3://user@scans/p1.png", "not a valid bucket name"),
    ("s3://scans/in/", "names a prefix"),
    ("s3://scans", "names a prefix"),
])
def test_unusable_urls_are_422_with_a_message(client, url, message):
    for body in (_job(input_url=url), _job(output_url=url)):
        response = client.post("/v1/jobs", json=body, headers=auth())
        assert response.status_code == 422, (url, response.text)
        error = response.json()["error"]
        assert error["type"] == "invalid_url" and message in error["message"], error


@pytest.mark.parametrize("callback", ["ftp://hooks.example/x", "javascript:alert(1)", "http://", "https:///path",
                                      "http://[::1]/hook", "http://[6674bDFd5]/x",
                                      "http://host:99999/x", "http://ho st/x", "/relative/hook"])
def test_callback_urls_must_be_http_or_https(client, callback):
    response = client.post("/v1/jobs", json=_job(callback_url=callback), headers=auth())
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"].startswith("callback_url")


def test_callback_url_is_stored_on_the_job(client):
    response = client.post("/v1/jobs", json=_job(callback_url="https://hooks.example/imgrestore?x=1"),
                           headers=auth())
    assert response.status_code == 201
    assert response.json()["callback_url"] == "https://hooks.example/imgrestore?x=1"


@pytest.mark.parametrize("body, fragment", [
    ({"task": "sharpen", "input_url": "s3://scans/a.png"}, "task"),
    ({"input_url": "s3://scans/a.png"}, "task: Field required"),
    ({"task": "denoise"}, "input_url: Field required"),
    ({"task": "denoise", "input_url": ""}, "input_url"),
    ({"task": "denoise", "input_url": "s3://scans/a.png", "owner": "root"}, "owner: Extra inputs"),
    ({"task": "denoise", "input_url": "s3://scans/a.png", "batch_id": "x"}, "batch_id"),
    ({"task": "denoise", "input_url": "s3://scans/a.png", "options": {"output_format": "gif"}}, "output_format"),
    ({"task": "denoise", "input_url": "s3://scans/a.png", "options": {"jpeg_quality": 0}}, "jpeg_quality"),
    ({"task": "denoise", "input_url": "s3://scans/" + "a" * 1100 + ".png"}, "input_url"),
    ([1, 2], "body"),
])
def test_schema_violations_are_422_validation_errors(client, body, fragment):
    response = client.post("/v1/jobs", json=body, headers=auth())
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "validation" and fragment in error["message"], error
    assert error["details"]


def test_malformed_json_is_a_422_not_a_500(client):
    response = client.post("/v1/jobs", content=b'{"task": "denoise", ', headers=auth() | {
        "Content-Type": "application/json"})
    assert response.status_code == 422 and response.json()["error"]["type"] == "validation"


def test_input_equal_to_output_is_refused(client):
    response = client.post("/v1/jobs", json=_job(output_url="s3://scans/in/p1.png"), headers=auth())
    assert response.status_code == 422 and "in place" in response.json()["error"]["message"]


def test_request_bodies_over_the_limit_get_413(client, api_settings):
    limit = api_settings.api_max_request_bytes
    big = _job(input_url="s3://scans/" + "a" * limit + ".png")
    response = client.post("/v1/jobs", json=big, headers=auth())
    assert response.status_code == 413
    assert "IMGRESTORE_API_MAX_REQUEST_BYTES" in response.json()["error"]["message"]

    def chunks():  # no Content-Length: the limit applies while reading
        yield b'{"task": "denoise", "input_url": "s3://scans/'
        for _ in range(limit // 1000 + 1):
            yield b"a" * 1000
        yield b'.png"}'

    response = client.post("/v1/jobs", content=chunks(), headers=auth() | {"Content-Type": "application/json"})
    assert response.status_code == 413
    # Just under the limit is fine (and then fails on its merits: a 1 KB key is over the URL length limit).
    assert client.post("/v1/jobs", json=_job(input_url="s3://scans/" + "a" * 900 + ".png"),
                       headers=auth()).status_code == 201


@pytest.mark.parametrize("body, fragment", [
    ({"task": "denoise"}, "exactly one of 'inputs'"),
    ({"task": "denoise", "inputs": ["s3://scans/a.png"], "prefix": "s3://scans/"}, "exactly one of 'inputs'"),
    ({"task": "denoise", "inputs": []}, "inputs"),
    ({"task": "denoise", "inputs": ["s3://scans/a.png"], "include": ["*.png"]}, "'include' applies to a 'prefix'"),
    ({"task": "denoise", "prefix": "s3://scans/", "include": [" "]}, "include patterns"),
])
def test_batch_schema_errors(client, body, fragment):
    response = client.post("/v1/batches", json=body, headers=auth())
    assert response.status_code == 422
    assert fragment in response.json()["error"]["message"], response.text


def test_batch_limits_and_conflicts_are_422(client, api_settings):
    many = [f"s3://scans/p{i}.png" for i in range(api_settings.api_max_batch_inputs + 1)]
    response = client.post("/v1/batches", json={"task": "denoise", "inputs": many}, headers=auth())
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "too_many_inputs"
    assert "IMGRESTORE_API_MAX_BATCH_INPUTS" in response.json()["error"]["message"]

    twice = {"task": "denoise", "inputs": ["s3://scans/a.png", "s3://scans/a.png"]}
    response = client.post("/v1/batches", json=twice, headers=auth())
    assert response.status_code == 422 and response.json()["error"]["type"] == "duplicate_input"

    clash = {"task": "denoise", "inputs": ["s3://scans/x/a.png", "s3://scans/y/a.png"],
             "output_prefix": "s3://scans/clean/"}
    response = client.post("/v1/batches", json=clash, headers=auth())
    assert response.status_code == 422 and "s3://scans/clean/a.png" in response.json()["error"]["message"]

    for bad in ({"task": "denoise", "inputs": ["/local/a.png"]},
                {"task": "denoise", "inputs": ["s3://scans/a.png"], "output_prefix": "s3://scans/../x/"},
                {"task": "denoise", "prefix": "file:///scans/"},
                {"task": "denoise", "prefix": "s3://scans/x/", "callback_url": "gopher://x"}):
        response = client.post("/v1/batches", json=bad, headers=auth())
        assert response.status_code == 422, (bad, response.text)


def test_unknown_routes_and_methods_use_the_error_shape(client):
    response = client.get("/v1/nothing-here", headers=auth())
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found"
    response = client.put("/v1/jobs", headers=auth())
    assert response.status_code == 405 and response.json()["error"]["type"] == "method_not_allowed"
    response = client.get("/v1/jobs/bad%20id!", headers=auth())
    assert response.status_code == 422
    response = client.get("/v1/jobs", params={"limit": 0}, headers=auth())
    assert response.status_code == 422 and "limit" in response.json()["error"]["message"]


def test_405_lists_every_method_of_the_path(client):
    response = client.put("/v1/jobs", headers=auth())
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "POST"}
    response = client.post("/v1/jobs/abc", headers=auth())
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "DELETE"}


def test_schema_patterns_agree_with_the_url_checks():
    """The OpenAPI schema documents the URL rules as patterns; the code enforces exactly those."""
    import re

    from services.api.errors import ApiError
    from services.api.urls import (CALLBACK_PATTERN, S3_OBJECT_PATTERN, S3_PREFIX_PATTERN, check_callback_url,
                                   check_s3_url)
    from services.webhooks import parse_networks

    def accepted(check, url, **kw) -> bool:
        try:
            check(url, **kw)
            return True
        except ApiError:
            return False

    objects = ["s3://scans/a.png", "s3://scans/a//b.png", "s3://scans/.../x", "s3://scans/..x", "s3://scans/../x",
               "s3://scans/./x", "s3://scans/a/", "s3://scans", "s3://sc/a", "s3://scans/a?b", "/a/b", "s3://sc@ns/x"]
    for url in objects:
        assert accepted(check_s3_url, url, what="u") == bool(re.fullmatch(S3_OBJECT_PATTERN, url)), url
        assert accepted(check_s3_url, url, what="u", prefix=True) == bool(re.fullmatch(S3_PREFIX_PATTERN, url)), url
    hooks = ["http://127.0.0.1:8000/hook", "https://hooks.example/x?y=1", "http://[::1]:80/", "http://host:99999/",
             "http://[6674bDFd5]/",
             "http:///x", "http://-a/", "ftp://x/", "http://a b/", "http://h:0/"]
    anywhere = parse_networks("0.0.0.0/0, ::/0")  # the pattern states the syntax; egress is checked apart
    for url in hooks:
        assert (accepted(check_callback_url, url, allowed_networks=anywhere)
                == bool(re.fullmatch(CALLBACK_PATTERN, url))), url


def test_unknown_query_parameters_are_refused(client):
    response = client.get("/v1/jobs", params={"limt": 5}, headers=auth())
    assert response.status_code == 422
    assert "'limt'" in response.json()["error"]["message"] and "limit" in response.json()["error"]["message"]
    assert client.get("/healthz", params={"x": 1}).status_code == 422
    assert client.get("/v1/jobs", params={"limit": 5, "state": "queued"}, headers=auth()).status_code == 200


def test_explicit_nulls_are_refused_where_the_schema_has_no_null(client):
    response = client.post("/v1/jobs", json={"task": "denoise", "input_url": "s3://scans/a.png", "output_url": None},
                           headers=auth())
    assert response.status_code == 422 and "output_url" in response.json()["error"]["message"]
    response = client.post("/v1/batches", json={"task": "denoise", "inputs": None, "prefix": "s3://scans/x/"},
                           headers=auth())
    assert response.status_code == 422


def test_a_body_that_is_not_utf8_is_a_4xx(client):
    response = client.post("/v1/jobs", content=b"\xff\xfe{", headers=auth() | {"Content-Type": "application/json"})
    assert response.status_code in (400, 422) and "error" in response.json()
