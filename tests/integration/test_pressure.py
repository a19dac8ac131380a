"""Submissions into a Redis that fills up (issue 16): a redis-server of the test's own with a small maxmemory
(noeviction), the API as a real uvicorn process, moto's S3 server and, once Redis has room again, a real worker.

What must hold while writes are refused: no 500, no dropped keep-alive connection, every 503 with Retry-After,
no job record without its message (nor one the client never got an id for), and /readyz failing with a reason."""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections import Counter

import httpx
import numpy as np
import pytest
import redis
from PIL import Image

from services.jobs import Task
from services.queue import depth
from services.queue.celery_app import create_app
from tests.integration.conftest import settings_from
from tests.support.api_server import start_api
from tests.support.chaos import RedisServer
from tests.support.processes import start_worker, wait_until

TOKEN = f"pressure-{uuid.uuid4().hex}"
THREADS = 8
PER_THREAD = 50
ROOM_BYTES = 1_000_000  # room for some dozens of jobs at a few KB each, then OOM


@pytest.fixture()
def full_redis(tmp_path):
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _burst(url: str, input_url: str) -> tuple[Counter, list[str], list[str], int, list[str]]:
    """THREADS keep-alive clients, PER_THREAD submissions each: (statuses, ids of 201s, transport errors,
    connections used, 503s without Retry-After)."""
    statuses: Counter = Counter()
    created: list[str] = []
    errors: list[str] = []
    no_retry_after: list[str] = []
    connections: set = set()
    lock = threading.Lock()

    def client_loop(n: int) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
            for i in range(PER_THREAD):
                try:
                    response = http.post("/v1/jobs", json={"task": "denoise", "input_url": input_url})
                except httpx.TransportError as exc:
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                stream = response.extensions.get("network_stream")
                with lock:
                    statuses[response.status_code] += 1
                    connections.add((n, stream.get_extra_info("client_addr") if stream else None))
                    if response.status_code == 201:
                        created.append(response.json()["id"])
                    elif response.status_code in (429, 503) and not response.headers.get("Retry-After"):
                        no_retry_after.append(response.text)

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses, created, errors, len(connections), no_retry_after


def test_a_burst_into_a_full_redis_loses_no_job_and_readyz_says_why(full_redis, s3_endpoint, s3_client, aws_env,
                                                                   tiny_model_dir, tmp_path):
    bucket = f"pressure-{uuid.uuid4().hex[:10]}"
    s3_client.create_bucket(Bucket=bucket)
    s3_client.put_object(Bucket=bucket, Key="in/page.png", Body=_png())
    env = {**aws_env, "IMGRESTORE_REDIS_URL": full_redis.url, "IMGRESTORE_S3_ENDPOINT_URL": s3_endpoint,
           "IMGRESTORE_MODEL_DIR": str(tiny_model_dir), "IMGRESTORE_QUEUE_PREFIX": "p.",
           "IMGRESTORE_INTRA_OP_THREADS": "1", "IMGRESTORE_METRICS_PORT": "0", "IMGRESTORE_LOG_FORMAT": "json",
           "IMGRESTORE_API_SUBMISSIONS_PER_MINUTE_PER_TOKEN": "0",  # this burst is about a full Redis, not a quota
           "IMGRESTORE_API_TOKENS": json.dumps({TOKEN: {"name": "pressure", "allow": [f"s3://{bucket}/"]}})}
    settings = settings_from(env)
    api = start_api(env, tmp_path)
    client = redis.Redis.from_url(full_redis.url, decode_responses=True)
    try:
        assert httpx.get(api.url + "/readyz").status_code == 200
        client.config_set("maxmemory", client.info("memory")["used_memory"] + ROOM_BYTES)

        readiness: list[tuple[int, str | None]] = []
        stop = threading.Event()

        def watch_readyz() -> None:
            while not stop.is_set():
                response = httpx.get(api.url + "/readyz", timeout=10)
                readiness.append((response.status_code, response.json()["checks"]["redis"].get("reason")))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch_readyz)
        watcher.start()
        try:
            statuses, created, errors, connections, no_retry_after = _burst(api.url, f"s3://{bucket}/in/page.png")
        finally:
            stop.set()
            watcher.join()
        full = httpx.get(api.url + "/readyz")

        records = {key.rsplit(":", 1)[1] for key in client.scan_iter(f"{settings.key_prefix}job:*")}
        queue_names = [settings.queue_for(t.value) for t in Task]
        messages = [json.loads(raw)["headers"]["id"] for name in queue_names for raw in client.lrange(name, 0, -1)]
        print(f"statuses {dict(statuses)}, transport errors {len(errors)}, connections {connections}, "
              f"readyz {Counter(readiness)}, records {len(records)}, messages {len(messages)}, "
              f"records without a message {len(records - set(messages))}, not told {len(records - set(created))}")
        assert not errors, errors[:3]
        assert connections == THREADS  # every client kept its one keep-alive connection
        assert set(statuses) <= {201, 503}, statuses  # never a 500
        assert statuses[201] > 0 and statuses[503] > 0, statuses  # Redis did fill up during the burst
        assert not no_retry_after, no_retry_after[:2]
        assert full.status_code == 503 and full.json()["checks"]["redis"]["reason"] == "redis_oom"
        assert (503, "redis_oom") in readiness

        # Every record is a job the client got an id for, queued, with exactly one message; nothing else.
        assert records == set(created), (len(records), len(created))
        assert sorted(messages) == sorted(created)
        assert depth.task_ids_with_messages(client, queue_names) == set(created)

        # Room again: ready, and a real worker runs every job the clients were told about.
        client.config_set("maxmemory", 0)
        assert httpx.get(api.url + "/readyz").status_code == 200
        worker = start_worker(f"w-{uuid.uuid4().hex[:6]}@pressure", env, tmp_path, app=create_app(settings))
        try:
            def all_finished() -> bool:
                states = [client.hget(f"{settings.key_prefix}job:{job_id}", "state") for job_id in created]
                return all(state in ("succeeded", "failed") for state in states)

            wait_until(all_finished, 180, "every created job to finish")
        finally:
            worker.stop()
        states = Counter(client.hget(f"{settings.key_prefix}job:{job_id}", "state") for job_id in created)
        assert states == {"succeeded": len(created)}, states
    finally:
        api.stop()
