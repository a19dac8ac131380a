"""How much work sits in the broker: waiting messages per queue and delivered-but-unacknowledged ones, and how
long the oldest of them has waited or run.

kombu's Redis transport keeps waiting messages in a list named after the queue (plus one list per priority step
when priorities are used) and every delivered, unacknowledged message in the ``unacked`` hash as JSON
``[message, exchange, routing_key]``. Read only: kombu is the one that writes these keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from ..jobs import JobState
from .job_store import JobStore

# kombu's Redis transport: priority lists are "<queue>\x06\x16<step>" for the steps other than 0.
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)


def waiting(client, queue: str) -> int:
    return int(client.llen(queue))


def in_flight_ids_by_queue(client, unacked_key: str = "unacked") -> dict[str, list[str | None]]:
    """Task ids of the delivered, unacknowledged messages, by the queue they came from (their routing key)."""
    found: dict[str, list[str | None]] = {}
    for _, raw in client.hscan_iter(unacked_key, count=500):
        try:
            message, _, routing_key = json.loads(raw)[:3]
        except (ValueError, TypeError):
            continue
        found.setdefault(routing_key, []).append(_task_id(message))  # None (unreadable) still counts in flight
    return found


def next_task_ids(client, queue: str, count: int) -> list[str]:
    """Task ids of the (up to) ``count`` messages of ``queue`` that are delivered next, priority lists included:
    kombu pushes on the left and takes from the right, so these are the ones that have waited longest."""
    keys = [queue, *(f"{queue}{_PRIORITY_SEP}{step}" for step in _PRIORITY_STEPS)]
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.lrange(key, -count, -1)
        pages = pipe.execute()
    ids: set[str] = set()
    for page in pages:
        for raw in page:
            _add_id(ids, raw, wrapped=False)
    return sorted(ids)


def task_ids_with_messages(client, queue_names: Iterable[str], unacked_key: str = "unacked",
                           page: int = 1000) -> set[str]:
    """Ids of every task that has a message in the broker: waiting in one of ``queue_names`` or delivered and not
    yet acknowledged. Messages move while we read: ``unacked`` is read before the queues (one the visibility sweep
    puts back meanwhile was seen there) and after them (one delivered meanwhile is seen there)."""
    ids: set[str] = set()
    _add_unacked(ids, client, unacked_key)
    for name in queue_names:
        for key in (name, *(f"{name}{_PRIORITY_SEP}{step}" for step in _PRIORITY_STEPS)):
            length = client.llen(key)
            for start in range(0, length, page):  # pushes shift items towards later pages: seen twice, never missed
                for raw in client.lrange(key, start, start + page - 1):
                    _add_id(ids, raw, wrapped=False)
    _add_unacked(ids, client, unacked_key)
    return ids


def _add_unacked(ids: set[str], client, unacked_key: str) -> None:
    for _, raw in client.hscan_iter(unacked_key, count=500):
        _add_id(ids, raw, wrapped=True)


def _add_id(ids: set[str], raw: str | bytes, wrapped: bool) -> None:
    try:
        message = json.loads(raw)
        if wrapped:
            message = message[0]
    except (ValueError, IndexError, KeyError, TypeError):
        return
    task_id = _task_id(message)
    if task_id:
        ids.add(task_id)


def _task_id(message) -> str | None:
    try:
        return message["headers"].get("id") or message["properties"].get("correlation_id") or None
    except (KeyError, TypeError, AttributeError):
        return None


@dataclass(frozen=True)
class QueueAge:
    """Seconds the longest-waiting job of a queue has been waiting, and the longest-running one running; 0: none."""

    oldest_waiting: float = 0.0
    oldest_running: float = 0.0


def job_ages(store: JobStore, waiting_counts: dict[str, int], in_flight: dict[str, list[str | None]], now: float,
             sample: int = 10) -> dict[str, QueueAge]:
    """Per queue of ``waiting_counts``: how long the job that has waited longest has been queued — among the
    ``sample`` messages delivered next, since it was last queued (created, retried, re-queued) — and how long the
    longest-running of its delivered jobs has been running. ``now`` is a Unix time. Messages whose job finished
    or expired (a duplicate, a control-queue task) are no job waiting and are left out."""
    next_ids = {queue: next_task_ids(store.redis, queue, sample) if count else []
                for queue, count in waiting_counts.items()}
    flying = {queue: [job_id for job_id in in_flight.get(queue, []) if job_id] for queue in waiting_counts}
    since = store.unfinished_since([job_id for ids in (*next_ids.values(), *flying.values()) for job_id in ids])
    ages = {}
    for queue in waiting_counts:
        waited = [now - since[job_id][1] for job_id in next_ids[queue] if job_id in since]
        ran = [now - since[job_id][1] for job_id in flying[queue]
               if job_id in since and since[job_id][0] is JobState.running]
        # max(0, …): the times come from the clocks of the hosts that queued or started the jobs
        ages[queue] = QueueAge(max([0.0, *waited]), max([0.0, *ran]))
    return ages
