"""Every job-store Lua script declares every key it touches, and failing a job dead-letters it in the same script.

Redis Cluster (and managed Redis in cluster mode) routes a script by the keys it declares: a key built inside the
script (``KEYS[2] .. batch``) is an error there. So each script call below runs under MONITOR, and every key that a
command *inside* the script names must be among the keys the call declared. With one hash tag in both prefixes
(the recipe the README gives for cluster mode) every declared key must also hash to one slot.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import redis
from redis.crc import key_slot

from services.config import Settings
from services.jobs import Job, JobError, JobRequest, OutputInfo, StageTimings, Task
from services.queue.celery_app import create_app
from services.queue.job_store import JobStore
from services.queue.submission import Submitter

_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"')
_KEYLESS = {"TIME"}


@dataclass
class ScriptCall:
    declared: set[str]
    ran: list[list[str]]  # the commands the script itself ran, each as [NAME, args...]

    def keys_touched(self) -> set[str]:
        return {command[1] for command in self.ran if command[0] not in _KEYLESS and len(command) > 1}


def _script_call(client: redis.Redis, action: Callable[[], object]) -> ScriptCall:
    """Runs ``action`` (one script call) under MONITOR and returns what the call declared and what it ran."""
    db = client.connection_pool.connection_kwargs.get("db", 0)
    sentinel = f"end-of-call-{uuid.uuid4().hex}"
    monitor = client.connection_pool.get_connection()
    try:
        monitor.send_command("MONITOR")
        assert monitor.read_response() in (b"OK", "OK")
        action()
        client.echo(sentinel)
        declared: set[str] = set()
        ran: list[list[str]] = []
        while True:
            line = monitor.read_response()
            line = line.decode() if isinstance(line, bytes) else line
            origin = line.split("[", 1)[1].split("]", 1)[0].split()
            if origin[0] != str(db):
                continue  # another database's traffic
            tokens = [t.replace('\\"', '"') for t in _TOKEN.findall(line.split("]", 1)[1])]
            name = tokens[0].upper()
            if name == "ECHO" and tokens[1] == sentinel:
                break
            if origin[1] == "lua":
                ran.append([name, *tokens[1:]])
            elif name in ("EVALSHA", "EVAL"):
                declared |= set(tokens[3:3 + int(tokens[2])])
        return ScriptCall(declared, ran)
    finally:
        monitor.disconnect()
        client.connection_pool.release(monitor)


@pytest.fixture()
def env(redis_url: str):
    tag = uuid.uuid4().hex[:8]
    settings = Settings(redis_url=redis_url, key_prefix=f"{{scripts-{tag}}}:", queue_prefix=f"{{scripts-{tag}}}.")
    store = JobStore.from_url(redis_url, settings.key_prefix)
    yield settings, store, Submitter(settings, store, create_app(settings))
    store.redis.delete(*store.redis.keys(f"{{scripts-{tag}}}*"))


def _queued(settings: Settings, store: JobStore, submitter: Submitter, batch_id: str | None = None) -> Job:
    job = Job.from_request(JobRequest(task=Task.denoise, input_url="s3://b/in.png", batch_id=batch_id))
    call = _script_call(store.redis, lambda: submitter.create_queued(job))
    _check(call)
    return job


def _check(call: ScriptCall) -> None:
    assert call.ran, "the action ran no script"
    undeclared = call.keys_touched() - call.declared
    assert not undeclared, f"a script touched keys it did not declare: {sorted(undeclared)}"
    assert len({key_slot(key.encode()) for key in call.declared}) == 1, \
        f"declared keys of one script call span several slots: {sorted(call.declared)}"


def test_every_script_of_a_job_lifecycle_declares_its_keys(env) -> None:
    settings, store, submitter = env
    job = _queued(settings, store, submitter, batch_id="b1")
    _check(_script_call(store.redis, lambda: store.start(job.id, "w1", 60_000)))
    _check(_script_call(store.redis, lambda: store.renew_lease(job.id, "w1", 60_000)))
    _check(_script_call(store.redis, lambda: store.interrupt(job.id, "w1")))
    _check(_script_call(store.redis, lambda: store.claim_orphan(job.id, "s1", unchanged_since=1e12, claim_ms=1)))
    _check(_script_call(store.redis, lambda: store.start(job.id, "w2", 60_000)))
    _check(_script_call(store.redis, lambda: store.release_lease(job.id, "w2")))
    result = OutputInfo(width=1, height=1, mode="RGB", format="PNG", bytes=1, megapixels=0.0, model="m", tiles=1)
    _check(_script_call(store.redis, lambda: store.succeed(job.id, result, StageTimings(), "cpu")))

    cancelled = _queued(settings, store, submitter, batch_id="b1")
    _check(_script_call(store.redis, lambda: store.cancel(cancelled.id)))
    store.redis.zadd(store.unfinished_key, {"expired-job": 1})  # its record is gone: the prune script drops it
    _check(_script_call(store.redis, lambda: store.unheld_unfinished(store.stale_ids(1e12, 100), [])))


def test_a_failed_batch_job_is_dead_lettered_by_the_script_that_fails_it(env) -> None:
    settings, store, submitter = env
    job = _queued(settings, store, submitter, batch_id="b2")
    store.start(job.id, "w1", 60_000)

    call = _script_call(store.redis, lambda: store.fail(job.id, JobError(type="bad_image", message="corrupt")))

    _check(call)
    dead_letter_writes = [c for c in call.ran if c[0] == "ZADD" and c[1] == store.dead_key and job.id in c]
    assert dead_letter_writes, "the dead-letter ZADD ran outside the script that marked the job failed"
    assert store.dead_letters() == [job.id]
    assert store.redis.zrange(store.batch_failed_key("b2"), 0, -1) == [job.id]
    assert store.get(job.id).state.value == "failed"


def test_a_duplicate_failure_changes_nothing(env) -> None:
    settings, store, submitter = env
    job = _queued(settings, store, submitter)
    store.start(job.id, "w1", 60_000)
    assert store.fail(job.id, JobError(type="bad_image", message="corrupt"))
    store.redis.zrem(store.dead_key, job.id)  # as if an operator had retried it through another path

    assert not store.fail(job.id, JobError(type="bad_image", message="corrupt"))
    assert store.dead_letters() == []


def test_cancelling_does_not_dead_letter(env) -> None:
    settings, store, submitter = env
    job = _queued(settings, store, submitter)
    assert store.cancel(job.id)
    assert store.dead_letters() == []


def test_dead_letters_list_failures_newest_first_within_one_second(env) -> None:
    # Failures within one second must keep their order: `monitor` shows the newest first. Failing in descending id
    # order makes Redis's tie-break (members in reverse lexicographic order) the oldest-first order.
    settings, store, submitter = env
    jobs = sorted((_queued(settings, store, submitter) for _ in range(5)), key=lambda j: j.id, reverse=True)
    for job in jobs:
        store.start(job.id, "w1", 60_000)
        store.fail(job.id, JobError(type="bad_image", message="corrupt"))

    assert store.dead_letters() == [job.id for job in reversed(jobs)]


def test_the_quota_recount_declares_its_keys(env) -> None:
    settings, store, submitter = env
    owned = [Job.from_request(JobRequest(task=Task.denoise, input_url=f"s3://b/{n}.png"), owner="ops")
             for n in range(3)]
    for job in owned:
        submitter.create_queued(job)
    store.redis.delete(store.job_key(owned[0].id))  # expired while queued
    call = _script_call(store.redis, lambda: store.recount_unfinished("ops"))
    _check(call)
    assert store.unfinished_of("ops") == 2
