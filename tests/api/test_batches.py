"""Batches over the API: explicit inputs, prefixes expanded by the workers, counts, failures, visibility."""

from __future__ import annotations

import json

import kombu.exceptions
import pytest

from services.jobs import JobError, OutputInfo, StageTimings
from services.queue.batch_store import Batch
from services.queue.submission import batch_job_id
from tests.api.conftest import OTHER, auth

pytestmark = pytest.mark.integration


def _result() -> OutputInfo:
    return OutputInfo(width=8, height=8, mode="L", format="PNG", bytes=10, megapixels=0.0001, model="m", tiles=1)


def test_an_inputs_batch_is_queued_sealed_and_counted(client, ctx):
    inputs = [f"s3://scans/b1/p{i}.png" for i in range(3)]
    response = client.post("/v1/batches", json={"task": "denoise", "profile": "document", "inputs": inputs,
                                                "output_prefix": "s3://scans/clean/"}, headers=auth())
    assert response.status_code == 201, response.text
    batch = response.json()
    assert response.headers["Location"] == f"/v1/batches/{batch['id']}"
    assert batch["state"] == "running" and batch["sealed"] and batch["total"] == 3 and batch["owner"] == "ops"
    assert batch["counts"] == {"succeeded": 0, "failed": 0, "pending": 3} and batch["progress"] == 0

    jobs = client.get(f"/v1/batches/{batch['id']}/jobs", headers=auth()).json()["jobs"]
    assert [j["input_url"] for j in jobs] == inputs
    assert [j["output_url"] for j in jobs] == [f"s3://scans/clean/p{i}.png" for i in range(3)]
    assert {j["owner"] for j in jobs} == {"ops"} and {j["batch_id"] for j in jobs} == {batch["id"]}
    assert [j["id"] for j in jobs] == [batch_job_id(batch["id"], url) for url in inputs]
    page = client.get(f"/v1/batches/{batch['id']}/jobs", params={"offset": 1, "limit": 1}, headers=auth())
    assert [j["input_url"] for j in page.json()["jobs"]] == inputs[1:2]

    # Jobs finish: counts, progress, state and the failures list follow.
    ctx.jobs.succeed(jobs[0]["id"], _result(), StageTimings(download=0.1), "CPUExecutionProvider")
    ctx.jobs.fail(jobs[1]["id"], JobError(type="image_decode", message="corrupt PNG"))
    view = client.get(f"/v1/batches/{batch['id']}", headers=auth()).json()
    assert view["counts"] == {"succeeded": 1, "failed": 1, "pending": 1}
    assert view["progress"] == pytest.approx(2 / 3) and view["state"] == "running"
    assert view["failures"] == [{"id": jobs[1]["id"], "input_url": inputs[1],
                                 "error": {"type": "image_decode", "message": "corrupt PNG", "transient": False}}]
    assert client.delete(f"/v1/jobs/{jobs[2]['id']}", headers=auth()).status_code == 200  # cancel the last one
    view = client.get(f"/v1/batches/{batch['id']}", headers=auth()).json()
    assert view["state"] == "finished" and view["progress"] == 1 and view["counts"]["failed"] == 2
    assert view["finished_at"] is not None  # the cancel marked it finished (and would send its webhook)


def test_a_prefix_batch_is_handed_to_the_workers(client, ctx):
    control = ctx.settings.control_queue
    before = ctx.redis.llen(control)
    response = client.post("/v1/batches", json={"task": "colorize", "prefix": "s3://archive/in/2019",
                                                "include": ["*.tif"], "callback_url": "https://hooks.example/b"},
                           headers=auth())
    assert response.status_code == 201, response.text
    batch = response.json()
    assert batch["state"] == "submitting" and not batch["sealed"] and batch["total"] == 0
    assert batch["source"] == "s3://archive/in/2019/" and batch["callback_url"] == "https://hooks.example/b"
    messages = [json.loads(raw) for raw in ctx.redis.lrange(control, 0, ctx.redis.llen(control) - before - 1)]
    expand = [m for m in messages if m["headers"]["task"] == "imgrestore.expand_batch"]
    assert len(expand) == 1 and batch["id"] in expand[0]["headers"]["argsrepr"]
    assert "'*.tif'" in expand[0]["headers"]["argsrepr"]

    ctx.redis.hset(ctx.batches.key(batch["id"]), mapping={"error": "listing refused", "sealed": "true"})
    view = client.get(f"/v1/batches/{batch['id']}", headers=auth()).json()
    assert view["error"] == "listing refused" and view["state"] == "finished"


def test_batches_are_visible_to_their_owner_and_inside_allow_lists(client, ctx):
    mine = client.post("/v1/batches", json={"task": "denoise", "inputs": ["s3://scans/v/a.png"]},
                       headers=auth()).json()["id"]
    theirs = client.post("/v1/batches", json={"task": "denoise", "inputs": ["s3://other-bucket/a.png"]},
                         headers=auth(OTHER)).json()["id"]
    backfill = ctx.batches.create(Batch(id="bf-0123456789abcdef", kind="backfill", task="denoise",
                                        source="s3://scans/2019/", output_prefix="s3://scans/clean/2019/")).id
    foreign = ctx.batches.create(Batch(id="bf-fedcba9876543210", kind="backfill", task="denoise",
                                       source="s3://scans/2019/", output_prefix="s3://elsewhere/")).id

    ops = [b["id"] for b in client.get("/v1/batches", params={"limit": 100}, headers=auth()).json()["batches"]]
    other = [b["id"] for b in client.get("/v1/batches", params={"limit": 100}, headers=auth(OTHER)).json()["batches"]]
    assert mine in ops and backfill in ops and theirs not in ops and foreign not in ops
    assert theirs in other and mine not in other and backfill not in other
    assert ops.index(backfill) < ops.index(mine)  # newest first
    for batch_id, token in ((theirs, None), (mine, OTHER), (foreign, None)):
        for path in (f"/v1/batches/{batch_id}", f"/v1/batches/{batch_id}/jobs"):
            hidden = client.get(path, headers=auth(*(token,) if token else ()))
            assert hidden.status_code == 404 and hidden.json()["error"]["type"] == "batch_not_found"
    assert client.get(f"/v1/batches/{backfill}", headers=auth()).json()["kind"] == "backfill"
    unknown = client.get("/v1/batches/unknown", headers=auth())
    assert unknown.status_code == 404  # said as a missing batch, not a missing job, with the same body shape
    error = unknown.json()["error"]
    assert error["type"] == "batch_not_found" and "no batch 'unknown'" in error["message"]


def test_batch_idempotency(client, ctx):
    body = {"task": "watermark", "inputs": ["s3://scans/w/a.png", "s3://scans/w/b.png"]}
    key = {"Idempotency-Key": "batch-77"}
    first = client.post("/v1/batches", json=body, headers=auth() | key)
    second = client.post("/v1/batches", json=body, headers=auth() | key)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"] and second.headers["Idempotent-Replayed"] == "true"
    assert second.json()["total"] == 2
    changed = client.post("/v1/batches", json=body | {"task": "denoise"}, headers=auth() | key)
    assert changed.status_code == 409
    # A job and a batch with the same key are different requests too.
    job = client.post("/v1/jobs", json={"task": "watermark", "input_url": "s3://scans/w/a.png"}, headers=auth() | key)
    assert job.status_code == 409


def test_a_prefix_batch_whose_message_cannot_be_published_leaves_no_batch(client, ctx, monkeypatch):
    def refuse(*args, **kwargs):
        raise kombu.exceptions.OperationalError("Error while reading from socket")

    monkeypatch.setattr(ctx.batch_submitter.app, "send_task", refuse)
    before = ctx.redis.zcard(ctx.batches.recent_key)
    response = client.post("/v1/batches", json={"task": "denoise", "prefix": "s3://scans/lost/"}, headers=auth())
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert response.json()["error"]["type"] == "queue_unavailable" and "socket" not in response.text
    assert ctx.redis.zcard(ctx.batches.recent_key) == before  # no batch stuck in "submitting"
