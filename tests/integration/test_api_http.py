"""The API over real HTTP: uvicorn in a subprocess, real Redis, moto's S3 server and a real worker process."""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from services import webhooks
from services.api.openapi import COMMITTED
from tests.support.api_server import start_api
from tests.support.processes import wait_until

TOKEN = f"http-{uuid.uuid4().hex}"


def _image(width: int, height: int, fmt: str = "PNG", seed: int = 0, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (height, width) if mode == "L" else (height, width, 3)
    buffer = io.BytesIO()
    Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def api_bucket(s3_client) -> str:
    name = f"api-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


def _tokens_env(bucket: str) -> dict:
    return {"IMGRESTORE_API_TOKENS": json.dumps({TOKEN: {"name": "http-tests", "allow": [f"s3://{bucket}/"]}})}


@pytest.fixture(scope="module")
def api(service_env, worker, api_bucket, tmp_path_factory):
    server = start_api({**service_env, **_tokens_env(api_bucket)}, tmp_path_factory.mktemp("api-logs"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(api):
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
        yield client


def _wait_job(http, job_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed"):
            return job
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} did not finish: {job}")


def _wait_batch(http, batch_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = http.get(f"/v1/batches/{batch_id}").json()
        if batch["state"] == "finished":
            return batch
        time.sleep(0.25)
    raise TimeoutError(f"batch {batch_id} did not finish: {batch}")


def test_a_job_runs_and_its_thumbnails_are_served(http, s3_client, api_bucket):
    s3_client.put_object(Bucket=api_bucket, Key="in/photo.png", Body=_image(300, 200))
    response = http.post("/v1/jobs", json={"task": "watermark", "input_url": f"s3://{api_bucket}/in/photo.png",
                                           "options": {"output_format": "jpeg"}})
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    early = http.get(f"/v1/jobs/{job_id}/thumbnail/output")
    assert early.status_code in (200, 409)  # 409 while the worker has not finished it

    job = _wait_job(http, job_id)
    assert job["state"] == "succeeded", job["error"]
    assert job["owner"] == "http-tests" and job["output_url"].endswith("/restored/watermark/photo.jpg")
    assert job["timings"]["infer"] > 0 and job["result"]["width"] == 300

    for which in ("input", "output"):
        response = http.get(f"/v1/jobs/{job_id}/thumbnail/{which}", params={"size": 144})
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
        thumb = Image.open(io.BytesIO(response.content))
        assert thumb.format == "JPEG" and thumb.size == (144, 96)  # fits 144×144, aspect kept
        again = http.get(f"/v1/jobs/{job_id}/thumbnail/{which}", params={"size": 144},
                         headers={"If-None-Match": response.headers["ETag"]})
        assert again.status_code == 304 and not again.content


def test_thumbnails_of_missing_or_broken_inputs_are_4xx(http, s3_client, api_bucket):
    missing = http.post("/v1/jobs", json={"task": "denoise", "input_url": f"s3://{api_bucket}/nope.png"}).json()
    s3_client.put_object(Bucket=api_bucket, Key="broken.png", Body=b"\x89PNG\r\n\x1a\n not really")
    broken = http.post("/v1/jobs", json={"task": "denoise", "input_url": f"s3://{api_bucket}/broken.png"}).json()
    assert http.get(f"/v1/jobs/{missing['id']}/thumbnail/input").status_code == 404
    response = http.get(f"/v1/jobs/{broken['id']}/thumbnail/input")
    assert response.status_code == 422 and response.json()["error"]["type"] == "image_decode"
    assert _wait_job(http, broken["id"])["error"]["type"] == "image_decode"
    assert http.get(f"/v1/jobs/{broken['id']}/thumbnail/output").status_code == 409


def test_batches_of_inputs_and_of_a_prefix_finish_with_counts_and_failures(http, s3_client, api_bucket):
    for i in range(2):
        s3_client.put_object(Bucket=api_bucket, Key=f"batch/ok-{i}.png", Body=_image(64, 48, seed=i, mode="L"))
    s3_client.put_object(Bucket=api_bucket, Key="batch/bad.png", Body=b"not an image")
    inputs = [f"s3://{api_bucket}/batch/ok-0.png", f"s3://{api_bucket}/batch/bad.png",
              f"s3://{api_bucket}/batch/ok-1.png"]
    response = http.post("/v1/batches", json={"task": "denoise", "profile": "document", "inputs": inputs,
                                              "output_prefix": f"s3://{api_bucket}/clean/"})
    assert response.status_code == 201, response.text
    batch = _wait_batch(http, response.json()["id"])
    assert batch["counts"] == {"succeeded": 2, "failed": 1, "pending": 0} and batch["progress"] == 1
    assert [f["input_url"] for f in batch["failures"]] == [inputs[1]]
    assert batch["failures"][0]["error"]["type"] == "image_decode"
    s3_client.head_object(Bucket=api_bucket, Key="clean/ok-0.png")

    for i in range(3):
        s3_client.put_object(Bucket=api_bucket, Key=f"tree/2019/{i}/scan.png", Body=_image(40, 40, seed=i))
    s3_client.put_object(Bucket=api_bucket, Key="tree/2019/notes.txt", Body=b"skip me")
    response = http.post("/v1/batches", json={"task": "colorize", "prefix": f"s3://{api_bucket}/tree/2019/",
                                              "output_prefix": f"s3://{api_bucket}/tree-clean/"})
    assert response.status_code == 201 and response.json()["state"] == "submitting"
    batch = _wait_batch(http, response.json()["id"])
    assert batch["total"] == 3 and batch["counts"]["succeeded"] == 3 and batch["error"] is None
    s3_client.head_object(Bucket=api_bucket, Key="tree-clean/1/scan.png")
    listed = http.get("/v1/batches", params={"limit": 5}).json()["batches"]
    assert listed[0]["id"] == batch["id"]


def test_probes_metrics_and_the_served_schema(api, http):
    ready = httpx.get(api.url + "/readyz")  # no token needed
    assert ready.status_code == 200, ready.text
    ok = {"ok": True, "reason": None, "error": None}
    assert ready.json() == {"status": "ready", "checks": {"redis": ok, "storage": ok}}
    metrics = httpx.get(api.url + "/metrics")
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    routes = {s.labels["route"] for s in families["imgrestore_api_requests"].samples}
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/readyz"} <= routes
    assert families["imgrestore_api_queue_metrics_up"].samples[0].value == 1
    assert "imgrestore_queue_backlog" in families

    served = httpx.get(api.url + "/openapi.json").json()
    assert served == json.loads(COMMITTED.read_text()), \
        "services/api/openapi.json is stale: python -m services.api.openapi --write"

    assert httpx.get(api.url + "/v1/jobs").status_code == 401
    log = api.log()
    assert '"route": "/v1/jobs/{job_id}"' in log and '"principal": "http-tests"' in log  # structured access log
    assert TOKEN not in log


class _Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_webhooks_for_a_job_and_a_batch_arrive_signed(make_service, s3_client, api_bucket, tmp_path):
    secret = f"whsec-{uuid.uuid4().hex}"
    # The receiver is on loopback, which webhooks may reach only when allowed (issue 11).
    service = make_service(workers=1, IMGRESTORE_CALLBACK_SECRET=secret,
                           IMGRESTORE_CALLBACK_ALLOWED_NETWORKS="127.0.0.1/32")
    api = start_api({**service.env, **_tokens_env(api_bucket)}, tmp_path, name="api-hooks")
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), type("Receiver", (_Receiver,), {"received": []}))
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}"
    try:
        s3_client.put_object(Bucket=api_bucket, Key="hooks/a.png", Body=_image(50, 40, seed=5))
        s3_client.put_object(Bucket=api_bucket, Key="hooks/b.png", Body=_image(40, 50, seed=6))
        with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
            job = http.post("/v1/jobs", json={"task": "denoise", "input_url": f"s3://{api_bucket}/hooks/a.png",
                                              "callback_url": f"{hook}/job"}).json()
            batch = http.post("/v1/batches", json={"task": "colorize", "inputs": [
                f"s3://{api_bucket}/hooks/a.png", f"s3://{api_bucket}/hooks/b.png"],
                "output_prefix": f"s3://{api_bucket}/hooks-out/", "callback_url": f"{hook}/batch"}).json()
        received = receiver.RequestHandlerClass.received
        wait_until(lambda: {p for p, _, _ in received} == {"/job", "/batch"}, 90, "both webhooks")

        by_path = {path: (headers, body) for path, headers, body in received}
        assert len(received) == 2  # one each: the batch's jobs send none of their own
        expected = (("/job", "job.finished", job["id"]), ("/batch", "batch.finished", batch["id"]))
        for path, event, expected_id in expected:
            headers, body = by_path[path]
            assert headers[webhooks.EVENT_HEADER] == event
            timestamp, signature = headers[webhooks.TIMESTAMP_HEADER], headers[webhooks.SIGNATURE_HEADER]
            assert webhooks.verify(secret, timestamp, body, signature)
            assert not webhooks.verify("wrong-secret", timestamp, body, signature)
            assert not webhooks.verify(secret, timestamp, body + b" ", signature)
            payload = json.loads(body)
            assert payload["id"] == expected_id
        assert json.loads(by_path["/job"][1])["state"] == "succeeded"
        batch_payload = json.loads(by_path["/batch"][1])
        assert batch_payload["state"] == "finished" and batch_payload["succeeded"] == 2
        assert secret not in api.log()
    finally:
        receiver.shutdown()
        api.stop()
