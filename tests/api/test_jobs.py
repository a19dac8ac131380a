"""Jobs over the API: submission records the owner, visibility per token, listing, cancel, idempotency."""

from __future__ import annotations

import base64
import json
import threading

import pytest
from fastapi.testclient import TestClient

from services.api import create_app
from services.api.idempotency import fingerprint
from services.jobs import Job, JobError, JobRequest, JobState, OutputInfo, StageTimings
from services.queue.celery_app import send
from services.queue.job_store import _encode
from tests.api.conftest import OTHER, auth, make_settings

pytestmark = pytest.mark.integration


def _submit(client, token=None, headers=None, **fields):
    body = {"task": "denoise", "input_url": "s3://scans/in/p1.png"} | fields
    return client.post("/v1/jobs", json=body, headers=auth(*(token,) if token else ()) | (headers or {}))


def _queued_messages(ctx, queue: str) -> list[dict]:
    """kombu's Redis transport: one JSON message per list item; the task name is in its headers."""
    return [json.loads(raw) for raw in ctx.redis.lrange(queue, 0, -1)]


def test_submit_records_the_job_with_its_owner_and_queues_it(client, ctx):
    response = _submit(client, profile="document", options={"output_format": "webp"})
    assert response.status_code == 201
    job = response.json()
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["state"] == "queued" and job["owner"] == "ops"
    assert job["output_url"] == "s3://scans/in/restored/denoise-document/p1.webp"
    stored = ctx.jobs.get(job["id"])
    assert stored.owner == "ops" and stored.options.output_format == "WEBP"
    queued = _queued_messages(ctx, ctx.settings.queue_for("denoise"))
    assert job["id"] in [m["headers"]["id"] for m in queued]  # task id = job id
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth()).json() == job


def test_a_document_can_ask_for_a_folder_of_page_images(client, ctx):
    response = _submit(client, input_url="s3://scans/in/ledger.pdf", profile="document",
                       options={"output_format": "png-pages"})
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["output_url"] == "s3://scans/in/restored/denoise-document/ledger"  # pages go to ledger/page-0001.png…
    assert ctx.jobs.get(job["id"]).options.output_format == "PNG-PAGES"


def test_other_tokens_cannot_see_or_cancel_a_job(client):
    job_id = _submit(client).json()["id"]
    for method in ("get", "delete"):
        response = getattr(client, method)(f"/v1/jobs/{job_id}", headers=auth(OTHER))
        assert response.status_code == 404 and "not visible" in response.json()["error"]["message"]
    assert job_id not in [j["id"] for j in client.get("/v1/jobs", headers=auth(OTHER)).json()["jobs"]]
    assert client.get(f"/v1/jobs/{job_id}", headers=auth()).status_code == 200


def test_jobs_without_an_owner_are_visible_inside_the_allow_list(client, ctx):
    """CLI-submitted jobs (no owner) show up for a token whose allow-list covers both their locations."""
    inside = Job.from_request(JobRequest(task="colorize", input_url="s3://archive/in/cli.png"))
    half = Job.from_request(JobRequest(task="colorize", input_url="s3://archive/in/x.png",
                                       output_url="s3://archive/out/x.png"))
    for job in (inside, half):
        ctx.jobs.create(job)
    listed = [j["id"] for j in client.get("/v1/jobs", params={"limit": 200}, headers=auth()).json()["jobs"]]
    assert inside.id in listed and half.id not in listed
    assert client.get(f"/v1/jobs/{half.id}", headers=auth()).status_code == 404
    assert client.get(f"/v1/jobs/{inside.id}", headers=auth(OTHER)).status_code == 404


def test_listing_is_newest_first_limited_and_filtered_by_state(client, ctx):
    ids = [_submit(client, input_url=f"s3://scans/list/{i}.png").json()["id"] for i in range(4)]
    listed = client.get("/v1/jobs", params={"limit": 3}, headers=auth()).json()["jobs"]
    assert [j["id"] for j in listed] == ids[::-1][:3]
    assert client.delete(f"/v1/jobs/{ids[0]}", headers=auth()).status_code == 200
    failed = client.get("/v1/jobs", params={"state": "failed", "limit": 200}, headers=auth()).json()["jobs"]
    assert ids[0] in [j["id"] for j in failed] and all(j["state"] == "failed" for j in failed)
    queued = client.get("/v1/jobs", params={"state": "queued", "limit": 200}, headers=auth()).json()["jobs"]
    assert ids[0] not in [j["id"] for j in queued] and ids[1] in [j["id"] for j in queued]


def test_cancel_a_queued_job_once_and_never_a_running_one(client, ctx):
    job_id = _submit(client).json()["id"]
    response = client.delete(f"/v1/jobs/{job_id}", headers=auth())
    assert response.status_code == 200
    assert response.json()["state"] == "failed" and response.json()["error"]["type"] == "cancelled"
    assert ctx.jobs.get(job_id).state is JobState.failed
    again = client.delete(f"/v1/jobs/{job_id}", headers=auth())
    assert again.status_code == 409 and "failed" in again.json()["error"]["message"]

    running = _submit(client).json()["id"]
    assert ctx.jobs.start(running, "w1@test", 60_000).status == "started"
    response = client.delete(f"/v1/jobs/{running}", headers=auth())
    assert response.status_code == 409 and "running" in response.json()["error"]["message"]
    assert ctx.jobs.get(running).state is JobState.running

    assert client.delete("/v1/jobs/no-such-job", headers=auth()).status_code == 404


def test_cancelling_a_job_with_a_callback_queues_its_webhook(client, ctx):
    job_id = _submit(client, callback_url="https://hooks.example/hook").json()["id"]
    control = ctx.settings.control_queue
    before = len(_queued_messages(ctx, control))
    assert client.delete(f"/v1/jobs/{job_id}", headers=auth()).status_code == 200
    messages = _queued_messages(ctx, control)[: len(_queued_messages(ctx, control)) - before]
    notes = [m for m in messages if m["headers"]["task"] == "imgrestore.notify"]
    assert len(notes) == 1
    assert notes[0]["headers"]["argsrepr"].startswith("['https://hooks.example/hook', 'job.finished'")


def test_idempotency_key_returns_the_original_job(client, ctx):
    key = {"Idempotency-Key": "order-4711"}
    first = _submit(client, headers=key, input_url="s3://scans/idem/a.png")
    second = _submit(client, headers=key, input_url="s3://scans/idem/a.png")
    assert first.status_code == second.status_code == 201
    assert second.json()["id"] == first.json()["id"]
    assert second.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    recorded = [j for j in ctx.jobs.recent(500) if j.input_url == "s3://scans/idem/a.png"]
    assert len(recorded) == 1

    different = _submit(client, headers=key, input_url="s3://scans/idem/b.png")
    assert different.status_code == 409 and different.json()["error"]["type"] == "idempotency_key_reused"
    # Keys are per token: another token's identical key creates its own job.
    theirs = _submit(client, OTHER, headers=key, input_url="s3://other-bucket/idem/a.png")
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]
    # The key expires with the configured TTL.
    ttl = ctx.redis.ttl(ctx.idempotency.redis_key("ops", "order-4711"))
    assert 0 < ttl <= ctx.settings.api_idempotency_ttl_seconds


def test_concurrent_retries_with_one_key_create_one_job(client, ctx):
    results: list = []

    def post() -> None:
        results.append(_submit(client, headers={"Idempotency-Key": "race-1"}, input_url="s3://scans/race.png"))

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {r.status_code for r in results} == {201}
    assert len({r.json()["id"] for r in results}) == 1
    assert len([j for j in ctx.jobs.recent(500) if j.input_url == "s3://scans/race.png"]) == 1


def test_a_failed_submission_releases_its_key_for_a_retry(client, ctx, monkeypatch):
    original = ctx.submitter.submit
    calls = []

    def flaky(request, owner=None):
        calls.append(request)
        if len(calls) == 1:
            raise ConnectionError("broker went away")
        return original(request, owner=owner)

    monkeypatch.setattr(ctx.submitter, "submit", flaky)
    key = {"Idempotency-Key": "retry-after-failure"}
    client = TestClient(client.app, raise_server_exceptions=False)  # answer like the server does: a 500
    failed = _submit(client, headers=key, input_url="s3://scans/flaky.png")
    assert failed.status_code == 500 and failed.json()["error"]["type"] == "internal"
    assert "broker" not in failed.text  # internals stay in the server log
    retried = _submit(client, headers=key, input_url="s3://scans/flaky.png")
    assert retried.status_code == 201 and len(calls) == 2


def test_a_pending_key_answers_409_while_the_first_request_runs(client, ctx):
    store = ctx.idempotency
    store_wait, store.wait_seconds = store.wait_seconds, 0.2
    try:
        body_print = fingerprint("job", '{"x": 1}')
        claim = store.claim("ops", "slow-key", "job", body_print)
        assert not isinstance(claim, str)
        with pytest.raises(Exception) as info:
            store.claim("ops", "slow-key", "job", body_print)
        assert getattr(info.value, "status", None) == 409
        store.complete(claim, "job-123")
        assert store.claim("ops", "slow-key", "job", body_print) == "job-123"
    finally:
        store.wait_seconds = store_wait


@pytest.mark.parametrize("key", ["has space", "", "x" * 256, "tab\there"])
def test_malformed_idempotency_keys_are_422(client, key):
    response = _submit(client, headers={"Idempotency-Key": key})
    assert response.status_code == 422, response.text


def test_the_message_is_celerys_own_with_only_what_a_worker_reads(client, ctx):
    job_id = _submit(client, input_url="s3://scans/compat.png").json()["id"]
    raw = next(m for m in ctx.redis.lrange(ctx.settings.queue_for("denoise"), 0, -1) if job_id in m)
    ours = json.loads(raw)
    scratch = ctx.settings.queue_prefix + "scratch"
    send(ctx.celery, "imgrestore.restore", [ctx.jobs.get(job_id).model_dump(mode="json")], scratch, job_id)
    celerys_raw = ctx.redis.lpop(scratch)
    celerys = json.loads(celerys_raw)
    assert ours.keys() == celerys.keys()
    # Every header and property left out is optional, and at its default in Celery's own message.
    assert set(ours["headers"]) == {"lang", "task", "id", "ignore_result"}
    for name in ours["headers"]:
        assert ours["headers"][name] == celerys["headers"][name], name
    assert all(not celerys["headers"][name] for name in ("eta", "expires", "group", "parent_id", "shadow"))
    assert set(ours["properties"]) <= set(celerys["properties"])
    assert ours["properties"]["body_encoding"] == "utf-8" and celerys["properties"]["body_encoding"] == "base64"
    (our_args, our_kwargs, our_embed) = json.loads(ours["body"])  # stored as is: no base64
    (args, kwargs, embed) = json.loads(base64.b64decode(celerys["body"]))
    assert (Job.model_validate(our_args[0]), our_kwargs) == (Job.model_validate(args[0]), kwargs)
    assert our_embed == {} and not any(embed.values())
    assert "output_url" not in our_args[0]  # the default one, derived again by the worker's Job
    assert ours["properties"]["delivery_info"] == {"exchange": "", "routing_key": ctx.settings.queue_for("denoise")}
    assert len(raw) < 0.3 * len(celerys_raw)  # no copy of the job in the headers, no nulls, no base64


@pytest.fixture()
def capped(redis_url):
    """An API whose denoise queue takes 2 waiting jobs and all queues together 3."""
    settings = make_settings(redis_url, max_queued_jobs_per_queue=2, max_queued_jobs=3, api_max_batch_inputs=5)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_submissions_over_a_queue_cap_are_429_with_retry_after_and_leave_nothing(capped):
    ctx = capped.app.state.ctx
    assert [_submit(capped, input_url=f"s3://scans/c{i}.png").status_code for i in range(2)] == [201, 201]
    refused = _submit(capped, input_url="s3://scans/c2.png")
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "30"
    error = refused.json()["error"]
    assert error["type"] == "queue_full" and "IMGRESTORE_MAX_QUEUED_JOBS_PER_QUEUE" in error["message"]
    assert ctx.redis.llen(ctx.settings.queue_for("denoise")) == 2
    assert len(ctx.redis.keys(ctx.settings.key_prefix + "job:*")) == 2  # the refused one left no record

    assert _submit(capped, task="colorize", input_url="s3://scans/g.png").status_code == 201  # 3 in all
    refused = _submit(capped, task="watermark", input_url="s3://scans/w.png")
    assert refused.status_code == 429 and "(IMGRESTORE_MAX_QUEUED_JOBS)" in refused.json()["error"]["message"]

    ctx.redis.rpop(ctx.settings.queue_for("denoise"))  # a worker took one
    assert _submit(capped, task="watermark", input_url="s3://scans/w.png").status_code == 201


def test_a_batch_that_would_overflow_a_cap_is_429_before_anything_is_created(capped):
    ctx = capped.app.state.ctx
    inputs = [f"s3://scans/b/{i}.png" for i in range(3)]
    refused = capped.post("/v1/batches", json={"task": "denoise", "inputs": inputs}, headers=auth())
    assert refused.status_code == 429 and refused.headers["Retry-After"]
    assert ctx.redis.llen(ctx.settings.queue_for("denoise")) == 0
    # nothing but the token's submission-rate counter (services/api/quotas.py)
    assert not [k for k in ctx.redis.keys(ctx.settings.key_prefix + "*") if not k.startswith(
        ctx.settings.key_prefix + "rate:")]
    fits = capped.post("/v1/batches", json={"task": "denoise", "inputs": inputs[:2]}, headers=auth())
    assert fits.status_code == 201 and ctx.redis.llen(ctx.settings.queue_for("denoise")) == 2


def test_listing_by_state_finds_finished_jobs_older_than_the_newest_2000(client, ctx):
    old = ctx.submitter.submit(JobRequest(task="denoise", input_url="s3://scans/old.png",
                                          output_url="s3://scans/old-out.png"), owner="ops")
    ctx.jobs.start(old.id, "w@test", 60_000)
    ctx.jobs.fail(old.id, JobError(type="image_decode", message="not an image"))
    with ctx.redis.pipeline(transaction=False) as pipe:  # 2 100 newer jobs, all queued
        for i in range(2100):
            job = Job(task="denoise", input_url=f"s3://scans/n{i}.png", output_url=f"s3://scans/o{i}.png", owner="ops")
            pipe.hset(ctx.jobs.job_key(job.id), mapping=_encode(job))
            pipe.zadd(ctx.jobs.recent_key, {job.id: job.created_at.timestamp()})
        pipe.execute()
    listed = client.get("/v1/jobs", params={"state": "failed", "limit": 200}, headers=auth()).json()["jobs"]
    assert old.id in [job["id"] for job in listed]
    assert all(job["state"] == "failed" for job in listed)
    ctx.jobs.requeue(old.id)  # leaves the failed index
    listed = client.get("/v1/jobs", params={"state": "failed", "limit": 200}, headers=auth()).json()["jobs"]
    assert old.id not in [job["id"] for job in listed]
    queued = client.get("/v1/jobs", params={"state": "queued", "limit": 5}, headers=auth()).json()["jobs"]
    assert queued and all(job["state"] == "queued" for job in queued)


def test_another_tokens_10_000_newer_jobs_hide_none_of_a_tokens_7(client, ctx):
    """Issue 16: listing scanned the newest 2 000 records, so a busy token's jobs hid a quiet token's, and an old
    succeeded job was not found by its state."""
    mine = [_submit(client, input_url=f"s3://scans/mine/{i}.png").json()["id"] for i in range(7)]
    ctx.jobs.start(mine[0], "w@test", 60_000)
    ctx.jobs.succeed(mine[0], OutputInfo(width=8, height=8, mode="L", format="PNG", bytes=10, megapixels=0.0001,
                                         model="m", tiles=1), StageTimings(), "cpu")
    with ctx.redis.pipeline(transaction=False) as pipe:  # another token's, all newer and queued: what create writes
        for i in range(10_000):
            job = Job(task="denoise", input_url=f"s3://other-bucket/{i}.png", owner="other")
            pipe.hset(ctx.jobs.job_key(job.id), mapping=_encode(job))
            pipe.zadd(ctx.jobs.recent_key, {job.id: job.created_at.timestamp()})
            pipe.zadd(ctx.jobs.unfinished_key, {job.id: job.created_at.timestamp()})
            pipe.zadd(ctx.jobs.owner_key("other"), {job.id: job.created_at.timestamp()})
        pipe.execute()

    listed = [job["id"] for job in client.get("/v1/jobs", params={"limit": 200}, headers=auth()).json()["jobs"]]
    assert [job_id for job_id in listed if job_id in mine] == mine[::-1]  # before: none of them
    succeeded = client.get("/v1/jobs", params={"state": "succeeded"}, headers=auth()).json()["jobs"]
    assert mine[0] in [job["id"] for job in succeeded] and all(job["state"] == "succeeded" for job in succeeded)
    queued = client.get("/v1/jobs", params={"state": "queued", "limit": 200}, headers=auth()).json()["jobs"]
    assert set(mine[1:]) <= {job["id"] for job in queued} and all(job["owner"] != "other" for job in queued)
    theirs = client.get("/v1/jobs", params={"state": "queued", "limit": 3}, headers=auth(OTHER)).json()["jobs"]
    assert len(theirs) == 3 and all(job["owner"] == "other" for job in theirs)
    assert not ctx.redis.keys(ctx.settings.key_prefix + "tmp:*")  # the scratch intersections are gone
