"""Issue 11: what a client with a valid token (or a hostile webhook receiver) could do, and no longer can.

Real parts only: the API as a uvicorn process, imgrestore worker processes, Redis and moto's S3 server over HTTP.
Figures (held times, peak memory) are printed with a ``FIGURE`` prefix: ``pytest -s`` shows them.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from services.jobs import JobRequest, Task
from tests.support.api_server import start_api
from tests.support.processes import free_port, start_worker, wait_until

TOKEN = f"abuse-{uuid.uuid4().hex}"
HOOK_HOST = "127.0.0.2"  # loopback, but not 127.0.0.1: services that allow it as a receiver still refuse 127.0.0.1


def _png(width: int = 48, height: int = 40, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _tokens_env(bucket: str) -> dict:
    return {"IMGRESTORE_API_TOKENS": json.dumps({TOKEN: {"name": "abuse", "allow": [f"s3://{bucket}/"]}})}


@pytest.fixture(scope="module")
def abuse_bucket(s3_client) -> str:
    name = f"abuse-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def api(service_env, abuse_bucket, tmp_path_factory):
    """The API with default egress settings (no private callback targets allowed); no worker needed."""
    server = start_api({**service_env, **_tokens_env(abuse_bucket)}, tmp_path_factory.mktemp("abuse-api"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(api):
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as client:
        yield client


def _wait(store, job_id: str, timeout: float = 90):
    wait_until(lambda: store.get(job_id).state.finished, timeout, f"job {job_id} to finish", interval=0.1)
    return store.get(job_id)


# --- webhook receivers ---------------------------------------------------------------------------------------------
@dataclass
class Receiver:
    """A recording HTTP receiver; ``redirect_to`` makes it answer 302."""

    host: str = HOOK_HOST
    redirect_to: str | None = None
    received: list = field(default_factory=list)

    def __post_init__(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                outer.received.append((self.command, self.path, dict(self.headers), self.rfile.read(length)))
                if outer.redirect_to:
                    self.send_response(302)
                    self.send_header("Location", outer.redirect_to)
                else:
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_GET = _record

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer((self.host, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()


class TricklingReceiver:
    """Answers ``200`` and then one header line every ``every`` seconds for up to ``for_s`` seconds: a per-read
    timeout never fires. Records how long each connection stayed open."""

    def __init__(self, every: float = 1.0, for_s: float = 25.0) -> None:
        self.every, self.for_s = every, for_s
        self.sock = socket.create_server((HOOK_HOST, 0))
        self.connections: list[tuple[float, float]] = []  # (opened, closed) monotonic
        self.opened = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{HOOK_HOST}:{self.sock.getsockname()[1]}/slow?token=trickle-secret"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        opened = time.monotonic()
        self.opened.set()
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                while time.monotonic() - opened < self.for_s:
                    time.sleep(self.every)
                    conn.sendall(b"X-Slow: 1\r\n")
                conn.sendall(b"Content-Length: 0\r\n\r\n")
            except OSError:
                pass  # the sender hung up: what the deadline is for
        self.connections.append((opened, time.monotonic()))

    def close(self) -> None:
        self.sock.close()


# --- finding 1: a slow receiver ------------------------------------------------------------------------------------
def test_a_slow_webhook_receiver_never_holds_a_restore_slot(make_service, s3_client, abuse_bucket):
    """Before: the callback ran in the worker's only slot with a 5 s *per read* timeout, so a receiver trickling
    a header line a second held it for the whole trickle (25 s here, 58 s in the issue) while the next job waited."""
    service = make_service(workers=1, concurrency=1, IMGRESTORE_CALLBACK_ALLOWED_NETWORKS=f"{HOOK_HOST}/32",
                           IMGRESTORE_CALLBACK_TIMEOUT="2", IMGRESTORE_CALLBACK_MAX_ATTEMPTS="1")
    receiver = TricklingReceiver(every=1.0, for_s=25.0)
    try:
        for name in ("a", "b"):
            s3_client.put_object(Bucket=abuse_bucket, Key=f"slow/{name}.png", Body=_png(seed=ord(name)))
        first = service.submitter.submit(JobRequest(task=Task.denoise, input_url=f"s3://{abuse_bucket}/slow/a.png",
                                                    callback_url=receiver.url))
        assert _wait(service.store, first.id).state.value == "succeeded"
        assert receiver.opened.wait(30), "the webhook never arrived"
        # The callback is now being delivered; another client's job must still start at once.
        second = service.submitter.submit(JobRequest(task=Task.denoise,
                                                     input_url=f"s3://{abuse_bucket}/slow/b.png"))
        done = _wait(service.store, second.id, timeout=60)
        held = (done.started_at - done.created_at).total_seconds()
        wait_until(lambda: receiver.connections, 30, "the slow webhook to end")
        opened, closed = receiver.connections[0]
        print(f"FIGURE slow receiver: next job waited {held:.2f} s to start; the callback attempt lasted "
              f"{closed - opened:.2f} s (deadline 2 s, receiver trickling for 25 s)")
        assert done.state.value == "succeeded"
        assert held < 5, f"the next job waited {held:.1f} s behind a webhook"
        assert closed - opened < 2 + 2.5, "the attempt outlived its overall deadline"
        log = service.workers[0].log()
        assert "trickle-secret" not in log  # finding 10: callback URLs are logged without their query string
    finally:
        receiver.close()


# --- finding 5: SSRF -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", [
    "http://127.0.0.1:6379/", "http://169.254.169.254/latest/meta-data/", "http://localhost:6379/",
    "http://2130706433/", "http://0x7f000001/", "http://0177.0.0.1/", "http://127.1/", "http://10.1.2.3/hook",
    "http://192.168.0.10/hook", "http://0.0.0.0:8000/", "http://224.0.0.1/"])
def test_the_api_refuses_callbacks_to_internal_addresses(http, abuse_bucket, target):
    response = http.post("/v1/jobs", json={"task": "denoise", "input_url": f"s3://{abuse_bucket}/in/x.png",
                                           "callback_url": target})
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert message.startswith("callback_url") and "address" in message


def test_delivery_checks_the_address_it_connects_to_and_follows_no_redirect(make_service, s3_client, abuse_bucket):
    """A name that was public when the job was submitted may resolve to loopback at delivery (DNS rebinding):
    here the job is queued without the API's check, as such a name would pass it. The worker refuses at connect time.
    A receiver that answers 302 is not followed (before: followed as a GET, to wherever it pointed)."""
    service = make_service(workers=1, IMGRESTORE_CALLBACK_ALLOWED_NETWORKS=f"{HOOK_HOST}/32",
                           IMGRESTORE_CALLBACK_MAX_ATTEMPTS="1")
    internal = Receiver(host="127.0.0.1")  # stands for Redis, the metadata service, an admin port…
    target = Receiver()
    redirector = Receiver(redirect_to=f"{target.url}/stolen")
    try:
        s3_client.put_object(Bucket=abuse_bucket, Key="ssrf/a.png", Body=_png(seed=3))
        url = f"s3://{abuse_bucket}/ssrf/a.png"
        port = internal.server.server_address[1]
        rebound = service.submitter.submit(JobRequest(task=Task.denoise, input_url=url,
                                                      output_url=f"s3://{abuse_bucket}/ssrf/out1.png",
                                                      callback_url=f"http://localhost:{port}/internal"))
        redirected = service.submitter.submit(JobRequest(task=Task.denoise, input_url=url,
                                                         output_url=f"s3://{abuse_bucket}/ssrf/out2.png",
                                                         callback_url=f"{redirector.url}/hook"))
        for job in (rebound, redirected):
            assert _wait(service.store, job.id).state.value == "succeeded"
        wait_until(lambda: redirector.received, 30, "the redirecting receiver to be called")
        wait_until(lambda: "webhook refused" in service.workers[0].log(), 30, "the refusal to be logged")
        time.sleep(2)  # a follow-up request, if any, would arrive now
        assert internal.received == []
        assert [(m, p) for m, p, _, _ in redirector.received] == [("POST", "/hook")]
        assert target.received == [], "the redirect was followed"
        assert "loopback" in service.workers[0].log()
    finally:
        for receiver in (internal, target, redirector):
            receiver.close()


# --- findings 6 and 7: outputs that overwrite inputs ---------------------------------------------------------------
def test_a_batch_cannot_write_over_its_own_inputs(http, s3_client, abuse_bucket):
    original = _png(seed=6)
    s3_client.put_object(Bucket=abuse_bucket, Key="inplace/in/a.png", Body=original)
    inputs = [f"s3://{abuse_bucket}/inplace/in/a.png"]
    response = http.post("/v1/batches", json={"task": "denoise", "inputs": inputs,
                                              "output_prefix": f"s3://{abuse_bucket}/inplace/in/"})
    assert response.status_code == 422, response.text
    assert "destroy" in response.json()["error"]["message"]
    # Another input of the same batch is refused too: a/x.png's output would be in/x.png.
    s3_client.put_object(Bucket=abuse_bucket, Key="inplace/other/a.png", Body=original)
    response = http.post("/v1/batches", json={"task": "denoise", "output_prefix": f"s3://{abuse_bucket}/inplace/in/",
                                              "inputs": [f"s3://{abuse_bucket}/inplace/other/a.png", inputs[0]]})
    assert response.status_code == 422, response.text
    assert s3_client.get_object(Bucket=abuse_bucket, Key="inplace/in/a.png")["Body"].read() == original


def test_imgrestore_run_refuses_to_write_over_its_inputs(service_env, s3_client, abuse_bucket):
    """Before: ``imgrestore run s3://b/k/x.png -o s3://b/k/`` restored x.png over itself."""
    original = _png(seed=8)
    s3_client.put_object(Bucket=abuse_bucket, Key="inplace/run/x.png", Body=original)
    result = _cli(service_env, "run", "--task", "denoise", f"s3://{abuse_bucket}/inplace/run/x.png",
                  "-o", f"s3://{abuse_bucket}/inplace/run/")
    assert result.returncode == 2 and "restoring in place would destroy it" in " ".join(result.stderr.split())
    assert s3_client.get_object(Bucket=abuse_bucket, Key="inplace/run/x.png")["Body"].read() == original


def _cli(env: dict, *args: str):
    import os
    import subprocess
    import sys

    from tests.support.processes import REPO

    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


@pytest.mark.parametrize("output", ["s3://{b}//inplace/victim.png", "s3://{b}/inplace//victim.png",
                                    "s3://{b}/x/../inplace/victim.png"])
def test_a_double_slash_does_not_get_past_the_in_place_guard(http, s3_client, abuse_bucket, output):
    response = http.post("/v1/jobs", json={"task": "denoise", "input_url": f"s3://{abuse_bucket}/inplace/victim.png",
                                           "output_url": output.format(b=abuse_bucket)})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["type"] == "invalid_url"


def test_workers_refuse_urls_with_empty_segments_too(worker, submitter, store, s3_client, abuse_bucket):
    """Past the API (CLI, a client of the queue): the storage layer reads the URL the same way and refuses."""
    original = _png(seed=7)
    s3_client.put_object(Bucket=abuse_bucket, Key="inplace/w/victim.png", Body=original)
    request = JobRequest(task=Task.denoise, input_url=f"s3://{abuse_bucket}/inplace/w/victim.png",
                         output_url=f"s3://{abuse_bucket}//inplace/w/victim.png")
    try:
        job = submitter.submit(request)
    except Exception as exc:  # refused at submission: nothing queued
        assert "empty path segment" in str(exc)
    else:
        finished = _wait(store, job.id)
        assert finished.state.value == "failed" and "empty path segment" in finished.error.message
    assert s3_client.get_object(Bucket=abuse_bucket, Key="inplace/w/victim.png")["Body"].read() == original


# --- finding 3: tile size ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tile_size, status", [(4096, 422), (2048, 422), (32, 422), (64, 422), (128, 201),
                                               (1024, 201)])
def test_tile_size_is_kept_in_a_range_that_bounds_worker_memory(http, abuse_bucket, tile_size, status):
    response = http.post("/v1/jobs", json={"task": "denoise", "input_url": f"s3://{abuse_bucket}/tiles/x.png",
                                           "options": {"tile_size": tile_size}})
    assert response.status_code == status, response.text


def test_the_cli_refuses_out_of_range_tile_sizes(service_env, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(_png())
    result = _cli(service_env, "run", "--task", "denoise", "--tile-size", "4096", str(tmp_path / "in"),
                  "-o", str(tmp_path / "out"))
    assert result.returncode == 2 and "4096" in result.stderr, result.stderr


# --- finding 11: '.' and '..' keys in listings ---------------------------------------------------------------------
def test_prefix_batches_skip_keys_with_dot_segments(make_service, api_for, s3_client, abuse_bucket):
    service = make_service(workers=1)
    api = api_for(service)
    for key in ("dots/in/ok.png", "dots/in/../escape.png", "dots/in/./here.png", "dots/in/a//b.png"):
        s3_client.put_object(Bucket=abuse_bucket, Key=key, Body=_png(seed=len(key)))
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as http:
        batch = http.post("/v1/batches", json={"task": "denoise", "prefix": f"s3://{abuse_bucket}/dots/in/",
                                               "output_prefix": f"s3://{abuse_bucket}/dots/out/"}).json()
        wait_until(lambda: http.get(f"/v1/batches/{batch['id']}").json()["state"] == "finished", 90,
                   "the batch to finish")
        final = http.get(f"/v1/batches/{batch['id']}").json()
    assert final["total"] == 1 and final["counts"]["succeeded"] == 1, final
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=abuse_bucket, Prefix="dots/").get("Contents", [])]
    assert "dots/out/ok.png" in keys
    assert not [k for k in keys if k.startswith("dots/out/") and k != "dots/out/ok.png"], keys
    assert "listing skipped a key" in service.workers[0].log()


@pytest.fixture()
def api_for(abuse_bucket, tmp_path):
    started = []

    def start(service, **env: str):
        server = start_api({**service.env, **_tokens_env(abuse_bucket), **env}, tmp_path, name="api-abuse")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# --- finding 10: exposure ------------------------------------------------------------------------------------------
def test_docs_are_off_by_default_and_no_page_loads_a_cdn(api):
    assert httpx.get(api.url + "/docs").status_code == 404
    assert httpx.get(api.url + "/openapi.json").status_code == 200
    page = httpx.get(api.url + "/ui").text
    assert "cdn." not in page and "https://" not in page


def _listening_addresses(port: int) -> set[str]:
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_worker_metrics_bind_the_configured_address(service_env, tmp_path, celery_app):
    port = free_port()
    worker = start_worker(f"metrics-{uuid.uuid4().hex[:6]}@test",
                          {**service_env, "IMGRESTORE_METRICS_PORT": str(port), "IMGRESTORE_METRICS_HOST": "127.0.0.1"},
                          tmp_path, app=celery_app)
    try:
        wait_until(lambda: _listening_addresses(port), 30, "the metrics endpoint to listen")
        assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only, not 0.0.0.0
        assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 200
    finally:
        worker.stop()


# --- finding 2: thumbnail memory -----------------------------------------------------------------------------------
def _vm(pid: int, field_name: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field_name} for {pid}")


def float_bomb(side: int = 10_000) -> bytes:
    """All-zero float32 TIFF, deflated: a few hundred KB that declare side² × 4 bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((side, side), np.float32)).save(buffer, "TIFF", compression="tiff_adobe_deflate")
    return buffer.getvalue()


def sixteen_bit_png(width: int, height: int) -> bytes:
    ramp = (np.arange(width, dtype=np.uint32)[None, :] * 65535 // max(1, width - 1)).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(np.repeat(ramp, height, axis=0)).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def test_thumbnails_decode_within_a_small_memory_budget(api, http, s3_client, abuse_bucket):
    """Before: the float TIFF below made the API peak at 3.2 GB (its pod limit is 512 Mi); any ?size was decoded."""
    s3_client.put_object(Bucket=abuse_bucket, Key="thumbs/bomb.tif", Body=float_bomb())
    s3_client.put_object(Bucket=abuse_bucket, Key="thumbs/gray16.png", Body=sixteen_bit_png(4000, 4000))
    jobs = {name: http.post("/v1/jobs", json={"task": "denoise", "input_url": f"s3://{abuse_bucket}/thumbs/{name}",
                                              "output_url": f"s3://{abuse_bucket}/thumbs-out/{name}"}).json()["id"]
            for name in ("bomb.tif", "gray16.png")}
    pid = api.process.pid
    before = _vm(pid, "VmRSS")
    bomb = http.get(f"/v1/jobs/{jobs['bomb.tif']}/thumbnail/input")
    assert bomb.status_code == 422 and bomb.json()["error"]["type"] == "image_too_large", bomb.text
    assert "IMGRESTORE_API_THUMBNAIL_MAX_PIXELS" in bomb.json()["error"]["message"]
    gray = http.get(f"/v1/jobs/{jobs['gray16.png']}/thumbnail/input", params={"size": 144})
    assert gray.status_code == 200, gray.text
    thumb = Image.open(io.BytesIO(gray.content))
    assert thumb.size == (144, 144) and thumb.mode == "L"
    row = np.asarray(thumb)[72]
    assert row[0] < 10 and row[-1] > 245  # the ramp survives: 16-bit scaled like the workers scale it
    odd = http.get(f"/v1/jobs/{jobs['gray16.png']}/thumbnail/input", params={"size": 101})
    assert odd.status_code == 422  # a fixed set of sizes: no decode per pixel of ?size=
    peak = _vm(pid, "VmHWM")
    print(f"FIGURE thumbnails: API RSS {before:.0f} MiB before, peak {peak:.0f} MiB after a 100 MP float TIFF "
          "(refused from its header) and a 16 MP 16-bit PNG thumbnail")
    assert peak - before < 200, f"thumbnails took {peak - before:.0f} MiB"
