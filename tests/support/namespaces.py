"""A Redis namespace of a test's own (key and queue prefixes) on the shared test database, and its clean-up."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from services.config import Settings
from services.jobs import Task
from services.queue.clients import job_store
from services.queue.job_store import JobStore


def isolated_settings(redis_url: str, tag: str, **fields) -> Settings:
    unique = uuid.uuid4().hex[:8]
    return Settings(redis_url=redis_url, key_prefix=f"{tag}-{unique}:", queue_prefix=f"{tag}{unique}.", **fields)


def isolated_store(config: Settings) -> Iterator[JobStore]:
    """The job store of ``config`` (a fixture body: yields it, then deletes the namespace's keys and queues)."""
    store = job_store(config)
    yield store
    keys = list(store.redis.scan_iter(f"{config.key_prefix}*")) + [config.queue_for(t.value) for t in Task]
    store.redis.delete(*keys)
