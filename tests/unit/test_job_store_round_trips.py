"""What the job store sends to Redis per job (issue 12, queue ceiling): counted on the client.

``JobStore.start`` needs the server's run id (a delivery that began under another server met a restart). It used to
send INFO on every start; it now learns it once per connection, and again once a connection is made anew.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter

import pytest
import redis

from services.config import Settings
from services.jobs import Job, JobRequest, Task
from services.queue.celery_app import create_app
from services.queue.job_store import lease_owner
from services.queue.submission import Submitter
from tests.support.namespaces import isolated_settings, isolated_store


@pytest.fixture()
def config(redis_url: str) -> Settings:
    return isolated_settings(redis_url, "rt")


@pytest.fixture()
def store(config: Settings):
    yield from isolated_store(config)


class CommandCount:
    """Counts the commands ``client`` sends, by name (its ``execute_command``, which scripts and INFO go through)."""

    def __init__(self, client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: Counter[str] = Counter()
        send = client.execute_command

        def counted(*args, **options):
            self.sent[str(args[0]).split()[0].upper()] += 1
            return send(*args, **options)

        monkeypatch.setattr(client, "execute_command", counted)


def _queued(config: Settings, store, n: int) -> list[Job]:
    submitter = Submitter(config, store, create_app(config))
    jobs = [Job.from_request(JobRequest(task=Task.denoise, input_url=f"s3://scans/rt-{i}.png")) for i in range(n)]
    for job in jobs:
        submitter.create_queued(job)
    return jobs


def test_starting_jobs_asks_the_server_run_id_once_per_connection(config, store, monkeypatch):
    jobs = _queued(config, store, 5)
    count = CommandCount(store.redis, monkeypatch)
    holder = lease_owner("node-a")

    outcomes = [store.start(job.id, holder, 30_000) for job in jobs]

    assert [o.status for o in outcomes] == ["started"] * 5
    assert count.sent["INFO"] == 1  # before: 5, one per start
    run_id = store.redis.info("server")["run_id"]
    assert {store.redis.hget(store.job_key(job.id), "redis_run") for job in jobs} == {run_id}


def test_a_connection_made_anew_learns_the_run_id_again(config, store, monkeypatch):
    first, second, third = _queued(config, store, 3)
    holder = lease_owner("node-a")
    store.start(first.id, holder, 30_000)
    count = CommandCount(store.redis, monkeypatch)

    # The server drops the store's connection (as a restart or a failover would): the next command reconnects.
    connection_id = store.redis.client_id()
    with redis.Redis.from_url(config.redis_url) as other:
        other.client_kill_filter(_id=connection_id)
    try:
        store.start(second.id, holder, 30_000)
    except redis.exceptions.ConnectionError:
        store.start(second.id, holder, 30_000)  # without the client's own retry, the caller's retry reconnects
    store.start(third.id, holder, 30_000)

    assert count.sent["INFO"] == 1  # learnt again on the new connection, then kept
    assert store.get(third.id).state.value == "running"


@pytest.mark.parametrize("events", [False, True])
def test_task_sent_events_only_when_configured(redis_url: str, events: bool):
    """IMGRESTORE_TASK_SENT_EVENTS: a PUBLISH per queued job for Flower's list of waiting tasks, or none."""
    config = isolated_settings(redis_url, "ev", task_sent_events=events)
    stores = isolated_store(config)
    store = next(stores)
    listener = store.redis.pubsub(ignore_subscribe_messages=True)
    listener.psubscribe("*celeryev/task.sent")  # kombu's fanout channel of the event (other tests' traffic aside)
    try:
        job = _queued(config, store, 1)[0]
        events_seen = []
        deadline = time.monotonic() + 1.5  # get_message answers None for a subscription's confirmation too
        while time.monotonic() < deadline:
            message = listener.get_message(timeout=0.2)
            if message is not None:
                envelope = json.loads(message["data"])  # kombu's: the event is its base64 body
                events_seen.append(json.loads(base64.b64decode(envelope["body"])))
        ours = [event for event in events_seen if isinstance(event, dict) and event.get("uuid") == job.id]
        assert [event["type"] for event in ours] == (["task-sent"] if events else [])
        assert store.get(job.id).state.value == "queued"
    finally:
        listener.close()
        next(stores, None)
