"""How much work sits in the broker: waiting messages per queue and delivered-but-unacknowledged ones.

kombu's Redis transport keeps waiting messages in a list named after the queue (plus one list per priority step
when priorities are used) and every delivered, unacknowledged message in the ``unacked`` hash as JSON
``[message, exchange, routing_key]``. Read only: kombu is the one that writes these keys.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable

# kombu's Redis transport: priority lists are "<queue>\x06\x16<step>" for the steps other than 0.
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)


def waiting(client, queue: str) -> int:
    return int(client.llen(queue))


def in_flight_by_queue(client, unacked_key: str = "unacked") -> Counter:
    counts: Counter = Counter()
    for _, raw in client.hscan_iter(unacked_key, count=500):
        try:
            routing_key = json.loads(raw)[2]
        except (ValueError, IndexError, TypeError):
            continue
        counts[routing_key] += 1
    return counts


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
        task_id = message["headers"].get("id") or message["properties"].get("correlation_id")
    except (ValueError, IndexError, KeyError, TypeError, AttributeError):
        return
    if task_id:
        ids.add(task_id)
