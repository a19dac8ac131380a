"""How much work sits in the broker: waiting messages per queue and delivered-but-unacknowledged ones.

kombu's Redis transport keeps waiting messages in a list named after the queue and every delivered,
unacknowledged message in the ``unacked`` hash as JSON ``[message, exchange, routing_key]``.
"""

from __future__ import annotations

import json
from collections import Counter


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
