"""What a worker does when Redis (broker and job store) goes away mid-task: wait, then carry on — never drop a message.

Celery's ``Task.retry`` publishes the next delivery and, when that publish fails, raises ``Reject(requeue=False)``,
which deletes the message being processed. kombu gives up reconnecting after its ~5 s connect timeout with an error
its publish-retry loop does not catch, so any Redis outage longer than that lost the message for ever (issue 15).
``retry_task`` replaces it: the publish is retried while Redis is waited for, with backoff, up to
``IMGRESTORE_REDIS_OUTAGE_WAIT`` seconds; past that, ``abandon_delivery`` ends the pool process *without*
acknowledging, so the delivery stays in kombu's ``unacked`` record and comes back once Redis does.

``OutageSafeRequest`` closes the other hole: when the broker connection drops, Celery cancels the running tasks
(their messages stay unacknowledged) and records the cancellation in the result backend — the same Redis, down. That
failure left the request looking revoked instead of cancelled, and a revoked request is acknowledged as soon as the
worker reconnects: the message was deleted while its job was still unfinished.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import NoReturn, TypeVar

import kombu.exceptions
import redis
from billiard.process import current_process
from celery import Task
from celery.exceptions import Retry
from celery.worker.request import Request

log = logging.getLogger(__name__)

T = TypeVar("T")

# Redis unreachable, restarting, failing over or loading its AOF. kombu wraps the redis-py errors of a publish in
# its OperationalError; BusyLoadingError is a redis ConnectionError.
REDIS_DOWN: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, kombu.exceptions.OperationalError,
)

EX_TEMPFAIL = 75  # sysexits.h: "temporary failure, try again later" — the exit status of an abandoned delivery


class OutageSafeRequest(Request):
    """Celery's request, except that a task cancelled on a broker connection loss always stays unacknowledged."""

    def _announce_cancelled(self, emit_retry: bool = True) -> None:
        self._already_cancelled = True  # first: ``on_failure`` must see a cancellation, never a revoke (which acks)
        try:
            super()._announce_cancelled(emit_retry)
        except REDIS_DOWN as exc:  # the backend is the Redis that just went away; the message is what matters
            log.warning("task cancelled on broker connection loss; its message stays unacknowledged",
                        extra={"task_id": self.id, "error": str(exc)})


class RedisUnavailable(Exception):
    """Redis did not answer within the outage budget."""

    def __init__(self, waited: float, cause: BaseException) -> None:
        super().__init__(
            f"Redis did not answer for {waited:.0f} s (IMGRESTORE_REDIS_OUTAGE_WAIT): {cause}; check that Redis is "
            "running and reachable at IMGRESTORE_REDIS_URL"
        )
        self.waited = waited
        self.cause = cause


def backoff(first: float = 0.25, cap: float = 8.0):
    """0.25, 0.5, 1, 2, 4, 8, 8, … seconds."""
    delay = first
    while True:
        yield delay
        delay = min(cap, delay * 2)


def wait_for_redis(client: redis.Redis, max_wait: float, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Pings ``client`` with backoff until it answers (True) or ``max_wait`` seconds have passed (False)."""
    deadline = time.monotonic() + max_wait
    for delay in backoff():
        try:
            client.ping()
            return True
        except REDIS_DOWN:
            pass
        if time.monotonic() + delay > deadline:
            return False
        sleep(delay)
    raise AssertionError("unreachable")


def patiently(call: Callable[[], T], client: redis.Redis, max_wait: float, what: str,
              sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()``, again after Redis answers whenever it fails on Redis; ``RedisUnavailable`` after ``max_wait``."""
    started = time.monotonic()
    while True:
        try:
            return call()
        except REDIS_DOWN as exc:
            waited = time.monotonic() - started
            log.warning("Redis unavailable, waiting for it", extra={"what": what, "error": str(exc),
                                                                    "waited_s": round(waited, 1)})
            if not wait_for_redis(client, max(0.0, max_wait - waited), sleep):
                raise RedisUnavailable(time.monotonic() - started, exc) from exc


def retry_task(task: Task, countdown: float, client: redis.Redis, max_wait: float, args: list | None = None,
               sleep: Callable[[float], None] = time.sleep) -> Retry:
    """Publishes the next delivery of the running task (same id, ``retries`` + 1) and returns the ``Retry`` to raise,
    on which the worker acknowledges the current message. Never ``Reject(requeue=False)``: when the publish cannot
    get through within ``max_wait`` seconds the current delivery is abandoned, unacknowledged."""
    request = task.request
    signature = task.signature_from_request(request, args, None, countdown=countdown, retries=request.retries + 1)
    try:
        patiently(signature.apply_async, client, max_wait, f"retry of {task.name}", sleep)
    except RedisUnavailable as exc:
        abandon_delivery(task.name, request.id, exc)
    return Retry(when=countdown, sig=signature)


def abandon_delivery(task_name: str, task_id: str | None, cause: BaseException) -> NoReturn:
    """Ends this pool process without acknowledging its message: Celery requeues a lost worker's task, or, when
    Redis is still down, kombu's visibility sweep returns it from ``unacked`` later. Nothing is deleted."""
    log.critical("Redis unavailable: ending this worker process, its message stays unacknowledged and will be "
                 "delivered again", extra={"task": task_name, "task_id": task_id, "error": str(cause)})
    if not current_process().name.startswith("ForkPoolWorker"):
        # solo/threads pool: this is the worker itself; exiting still beats acknowledging (a supervisor restarts it).
        log.critical("not a pool process: the whole worker exits", extra={"task_id": task_id})
    for handler in logging.getLogger().handlers:
        handler.flush()
    _end_process(EX_TEMPFAIL)
    raise AssertionError("unreachable")  # only when a test replaced _end_process


def _end_process(status: int) -> None:
    os._exit(status)  # no cleanup, no acknowledgement: exactly what a lost worker looks like to Celery
