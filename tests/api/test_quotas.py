"""Issue 11, finding 8 and 5's remainder, as the API decides them: per-token quotas (unfinished jobs, submissions per
minute) answered 429 with Retry-After, cancelling a batch, and a token's own list of callback hosts.

Real Redis, the API in-process; the job transitions a worker would make are made through the same ``JobStore``
calls it uses (``start``, ``succeed``, ``fail``), so the counts are checked against every way a job can end."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.api import create_app
from services.jobs import JobError, OutputInfo, StageTimings
from services.queue.job_store import lease_owner
from services.queue.submission import batch_job_id
from tests.api.conftest import OPS, OTHER, TOKENS, auth, make_settings

pytestmark = pytest.mark.integration

HOOKED = "hooked-token-0123456789abcdef"


def _result() -> OutputInfo:
    return OutputInfo(width=8, height=8, mode="L", format="PNG", bytes=10, megapixels=0.0001, model="m", tiles=1)


@pytest.fixture()
def make_client(redis_url):
    clients = []

    def make(**overrides) -> TestClient:
        client = TestClient(create_app(make_settings(redis_url, **overrides)))
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def _job(client: TestClient, name: str, token: str = OPS):
    return client.post("/v1/jobs", json={"task": "denoise", "input_url": f"s3://scans/q/{name}.png"},
                       headers=auth(token))


def _assert_quota_answer(response, setting: str) -> int:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["type"] == "quota_exceeded"
    assert setting in response.json()["error"]["message"]
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    return retry_after


def test_unfinished_jobs_per_token_are_capped_and_counted_down_however_jobs_end(make_client):
    client = make_client(api_max_unfinished_jobs_per_token=4, api_max_batch_inputs=10)
    ctx = client.app.state.ctx
    ids = [_job(client, f"a{i}").json()["id"] for i in range(4)]
    assert ctx.jobs.unfinished_of("ops") == 4
    _assert_quota_answer(_job(client, "over"), "IMGRESTORE_API_MAX_UNFINISHED_JOBS_PER_TOKEN")
    theirs = client.post("/v1/jobs", json={"task": "denoise", "input_url": "s3://other-bucket/q.png"},
                         headers=auth(OTHER))
    assert theirs.status_code == 201 and ctx.jobs.unfinished_of("other") == 1  # each token has its own count
    batch = client.post("/v1/batches", json={"task": "denoise", "inputs": ["s3://scans/q/b1.png"]}, headers=auth())
    _assert_quota_answer(batch, "IMGRESTORE_API_MAX_UNFINISHED_JOBS_PER_TOKEN")

    # Every way out of queued/running gives one back: cancel, failure (dead letter), success after a start.
    assert client.delete(f"/v1/jobs/{ids[0]}", headers=auth()).status_code == 200
    assert ctx.jobs.unfinished_of("ops") == 3
    ctx.jobs.fail(ids[1], JobError(type="image_decode", message="corrupt"))
    assert ids[1] in ctx.jobs.dead_letters() and ctx.jobs.unfinished_of("ops") == 2
    assert ctx.jobs.start(ids[2], lease_owner("node-q"), 60_000).status == "started"
    assert ctx.jobs.unfinished_of("ops") == 2  # running still counts
    ctx.jobs.succeed(ids[2], _result(), StageTimings(download=0.1), "CPUExecutionProvider")
    assert ctx.jobs.unfinished_of("ops") == 1
    ctx.jobs.succeed(ids[2], _result(), StageTimings(download=0.1), "CPUExecutionProvider")  # a duplicate finish
    assert ctx.jobs.unfinished_of("ops") == 1

    # A re-queued (retried) job counts again; a batch that fits is taken and counted per job.
    ctx.submitter.requeue(ids[1])
    assert ctx.jobs.unfinished_of("ops") == 2
    inputs = [f"s3://scans/q/c{i}.png" for i in range(2)]
    assert client.post("/v1/batches", json={"task": "denoise", "inputs": inputs},
                       headers=auth()).status_code == 201
    assert ctx.jobs.unfinished_of("ops") == 4
    _assert_quota_answer(_job(client, "over-again"), "IMGRESTORE_API_MAX_UNFINISHED_JOBS_PER_TOKEN")


def test_submissions_per_minute_per_token_are_capped(make_client):
    client = make_client(api_submissions_per_minute_per_token=3)
    if time.time() % 60 > 50:  # all four requests inside one one-minute window
        time.sleep(61 - time.time() % 60)
    for i in range(3):
        assert _job(client, f"r{i}").status_code == 201
    refused = _job(client, "r3")
    _assert_quota_answer(refused, "IMGRESTORE_API_SUBMISSIONS_PER_MINUTE_PER_TOKEN")
    batch = client.post("/v1/batches", json={"task": "denoise", "inputs": ["s3://scans/q/rb.png"]}, headers=auth())
    _assert_quota_answer(batch, "IMGRESTORE_API_SUBMISSIONS_PER_MINUTE_PER_TOKEN")
    assert client.get("/v1/jobs", headers=auth()).status_code == 200  # reads are not submissions
    other = client.post("/v1/jobs", json={"task": "denoise", "input_url": "s3://other-bucket/r.png"},
                        headers=auth(OTHER))
    assert other.status_code == 201, other.text  # another token has its own count


def test_cancelling_a_batch_cancels_what_has_not_started(make_client):
    client = make_client(api_max_batch_inputs=10)
    ctx = client.app.state.ctx
    inputs = [f"s3://scans/cancel/p{i}.png" for i in range(4)]
    batch = client.post("/v1/batches", json={"task": "denoise", "inputs": inputs}, headers=auth()).json()
    ids = [batch_job_id(batch["id"], url) for url in inputs]
    assert ctx.jobs.start(ids[0], lease_owner("node-c"), 60_000).status == "started"
    ctx.jobs.succeed(ids[1], _result(), StageTimings(download=0.1), "CPUExecutionProvider")
    assert ctx.jobs.unfinished_of("ops") == 3

    assert client.delete(f"/v1/batches/{batch['id']}", headers=auth(OTHER)).status_code == 404
    answer = client.delete(f"/v1/batches/{batch['id']}", headers=auth())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["cancelled"] == 2 and body["running"] == 1
    assert body["batch"]["cancelled"] and body["batch"]["state"] == "running"
    assert body["batch"]["counts"] == {"succeeded": 1, "failed": 2, "pending": 1}
    states = {job["id"]: (job["state"], (job.get("error") or {}).get("type"))
              for job in client.get(f"/v1/batches/{batch['id']}/jobs", headers=auth()).json()["jobs"]}
    assert states == {ids[0]: ("running", None), ids[1]: ("succeeded", None), ids[2]: ("failed", "cancelled"),
                      ids[3]: ("failed", "cancelled")}
    assert ctx.jobs.unfinished_of("ops") == 1

    ctx.jobs.succeed(ids[0], _result(), StageTimings(download=0.1), "CPUExecutionProvider")  # running ones finish
    again = client.delete(f"/v1/batches/{batch['id']}", headers=auth()).json()
    assert again["cancelled"] == 0 and again["running"] == 0 and again["batch"]["state"] == "finished"
    assert ctx.jobs.unfinished_of("ops") == 0


def test_a_large_inputs_batch_is_answered_at_once_and_a_cancel_stops_its_expansion(make_client):
    client = make_client(api_max_batch_inputs=50, api_inline_batch_inputs=5, api_max_request_bytes=100_000)
    ctx = client.app.state.ctx
    inputs = [f"s3://scans/big/p{i:03d}.png" for i in range(40)]
    answer = client.post("/v1/batches", json={"task": "denoise", "inputs": inputs}, headers=auth())
    assert answer.status_code == 201, answer.text
    batch = answer.json()
    assert batch["state"] == "submitting" and batch["total"] == 0  # nothing queued inside the request
    control = [json.loads(raw) for raw in ctx.redis.lrange(ctx.settings.control_queue, 0, -1)]
    assert [m for m in control if m["headers"]["task"] == "imgrestore.expand_batch"
            and batch["id"] in m["headers"]["argsrepr"]]

    # What the worker's expand task does, a page of 16 at a time: the inputs are queued in order.
    cursor = ctx.batch_submitter._expand_inputs(ctx.batches.get(batch["id"]), 0, 10_000, page_budget=1, page=16)
    assert cursor == "16" and ctx.batches.get(batch["id"]).total == 16
    assert ctx.batches.job_ids(batch["id"]) == [batch_job_id(batch["id"], url) for url in inputs[:16]]

    cancelled = client.delete(f"/v1/batches/{batch['id']}", headers=auth()).json()
    assert cancelled["cancelled"] == 16 and cancelled["batch"]["state"] == "finished"
    assert ctx.batch_submitter.expand_step(batch["id"], "inputs:", [], cursor, ctx.storage, 10_000) is None
    assert ctx.batches.get(batch["id"]).total == 16  # the expansion queued nothing more
    assert ctx.jobs.unfinished_of("ops") == 0


def test_a_token_with_callback_hosts_may_only_name_those(make_client):
    tokens = {**TOKENS, HOOKED: {"name": "hooked", "allow": ["s3://scans/"], "callback_hosts": ["hooks.example.com"]}}
    client = make_client(api_tokens=SecretStr(json.dumps(tokens)))
    job = {"task": "denoise", "input_url": "s3://scans/h/a.png"}
    ok = client.post("/v1/jobs", json=job | {"callback_url": "https://hooks.example.com/done"}, headers=auth(HOOKED))
    assert ok.status_code == 201, ok.text
    for url in ("https://elsewhere.example.com/done", "https://hooks.example.com.evil.net/x"):
        refused = client.post("/v1/jobs", json=job | {"callback_url": url}, headers=auth(HOOKED))
        assert refused.status_code == 403 and refused.json()["error"]["type"] == "forbidden", refused.text
        batch = client.post("/v1/batches", json={"task": "denoise", "inputs": ["s3://scans/h/b.png"],
                                                 "callback_url": url}, headers=auth(HOOKED))
        assert batch.status_code == 403, batch.text
    # A token without the list keeps the egress rules alone.
    assert client.post("/v1/jobs", json=job | {"callback_url": "https://elsewhere.example.com/done"},
                       headers=auth(OPS)).status_code == 201


def test_a_job_whose_record_expired_while_queued_gives_its_place_back_when_the_quota_refuses(make_client):
    """A queued job's record expired (TTL) or was evicted: no finish will count it down. The next refusal recounts
    the token from its records, and takes the submission if that leaves room; not again within the interval."""
    client = make_client(api_max_unfinished_jobs_per_token=3, api_max_batch_inputs=10, api_quota_recount_interval=60)
    ctx = client.app.state.ctx
    ids = [_job(client, f"x{i}").json()["id"] for i in range(3)]
    ctx.jobs.redis.delete(ctx.jobs.job_key(ids[0]))  # what the record TTL does to a job that waited too long
    assert ctx.jobs.unfinished_of("ops") == 3  # the drift

    assert _job(client, "after-expiry").status_code == 201
    assert ctx.jobs.unfinished_of("ops") == 3  # two left of the three, and the new one

    # Within the interval a refusal does not scan again, even when a recount would free a place.
    ctx.jobs.redis.delete(ctx.jobs.job_key(ids[1]))
    _assert_quota_answer(_job(client, "throttled"), "IMGRESTORE_API_MAX_UNFINISHED_JOBS_PER_TOKEN")
    assert ctx.jobs.unfinished_of("ops") == 3

    # A batch, checked once up front, recounts the same way once a recount is due again.
    ctx.jobs.redis.delete(f"{ctx.settings.key_prefix}tokens:recounted:ops")
    batch = client.post("/v1/batches", json={"task": "denoise", "inputs": ["s3://scans/q/rc.png"]}, headers=auth())
    assert batch.status_code == 201, batch.text
    assert ctx.jobs.unfinished_of("ops") == 3


def test_a_recount_finds_the_jobs_counted_and_keeps_finished_and_other_tokens_out(make_client):
    client = make_client(api_max_unfinished_jobs_per_token=10)
    ctx = client.app.state.ctx
    ids = [_job(client, f"k{i}").json()["id"] for i in range(4)]
    theirs = client.post("/v1/jobs", json={"task": "denoise", "input_url": "s3://other-bucket/k.png"},
                         headers=auth(OTHER))
    assert theirs.status_code == 201, theirs.text
    assert ctx.jobs.start(ids[0], lease_owner("node-k"), 60_000).status == "started"  # running still counts
    ctx.jobs.succeed(ids[1], _result(), StageTimings(download=0.1), "CPUExecutionProvider")
    ctx.jobs.redis.hset(ctx.jobs.owners_unfinished_key, "ops", 9)  # drifted

    assert ctx.jobs.recount_unfinished("ops") == 3 and ctx.jobs.unfinished_of("ops") == 3
    for job_id in (ids[0], ids[2], ids[3]):
        ctx.jobs.fail(job_id, JobError(type="image_decode", message="corrupt"))
    assert ctx.jobs.recount_unfinished("ops") == 0 and ctx.jobs.unfinished_of("ops") == 0
    assert ctx.jobs.unfinished_of("other") == 1
