"""Batches: many jobs submitted together (an API batch or a backfill), with counts, progress and failures.

Keys (under ``settings.key_prefix``): ``batch:<id>`` hash (fields below, counters ``succeeded``/``failed`` kept by
``JobStore`` as jobs finish), ``batch:<id>:jobs`` list of job ids, ``batch:<id>:failed`` sorted set of failed job
ids, ``batches:recent`` sorted set of batch ids by creation time.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from enum import Enum

from pydantic import BaseModel, Field

from ..errors import JobNotFoundError
from ..jobs import Job, JobOptions, Profile, Task, utcnow
from .job_store import JobStore

RECENT_BATCHES = 1_000


class BatchState(str, Enum):
    submitting = "submitting"  # jobs are still being added (a prefix is being listed)
    running = "running"  # all jobs submitted, some not finished
    finished = "finished"  # every job succeeded or failed


class Batch(BaseModel):
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    kind: str = "batch"  # or "backfill"
    task: Task
    profile: Profile = Profile.auto
    options: JobOptions = Field(default_factory=JobOptions)
    source: str = ""
    output_prefix: str | None = None
    owner: str | None = None
    callback_url: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    sealed: bool = False  # no more jobs will be added
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    finished_at: datetime | None = None

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    @property
    def state(self) -> BatchState:
        if not self.sealed:
            return BatchState.submitting
        return BatchState.finished if self.done >= self.total else BatchState.running

    @property
    def progress(self) -> float:
        return 1.0 if self.total == 0 and self.sealed else (self.done / self.total if self.total else 0.0)


_INT_FIELDS = ("total", "succeeded", "failed")


class BatchStore:
    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs
        self.redis = jobs.redis
        self.prefix = jobs.prefix

    def key(self, batch_id: str) -> str:
        return f"{self.jobs.batch_prefix}{batch_id}"

    @property
    def recent_key(self) -> str:
        return f"{self.prefix}batches:recent"

    def create(self, batch: Batch) -> Batch:
        data = batch.model_dump(mode="json", exclude_none=True)
        mapping = {k: (v if isinstance(v, str) else _dump(v)) for k, v in data.items()}
        with self.redis.pipeline() as pipe:
            pipe.hset(self.key(batch.id), mapping=mapping)
            pipe.zadd(self.recent_key, {batch.id: batch.created_at.timestamp()})
            pipe.zremrangebyrank(self.recent_key, 0, -RECENT_BATCHES - 1)
            pipe.execute()
        return batch

    def discard(self, batch_id: str) -> None:
        """Removes a batch nothing was queued for (its creation failed half-way): it would read as submitting."""
        with self.redis.pipeline() as pipe:
            pipe.delete(self.key(batch_id))
            pipe.zrem(self.recent_key, batch_id)
            pipe.execute()

    def get(self, batch_id: str) -> Batch:
        raw = self.redis.hgetall(self.key(batch_id))
        if not raw:
            raise JobNotFoundError(f"no batch {batch_id!r}")
        data = {k: (_load(v) if k in ("options", "sealed") else v) for k, v in raw.items() if v != ""}
        for name in _INT_FIELDS:
            data[name] = int(data.get(name, 0))
        return Batch.model_validate(data)

    def add_job(self, batch_id: str, job: Job) -> None:
        """Counts a job into the batch; call before the job is enqueued so it can never finish uncounted."""
        with self.redis.pipeline() as pipe:
            pipe.hincrby(self.key(batch_id), "total", 1)
            pipe.rpush(self.key(batch_id) + ":jobs", job.id)
            pipe.execute()

    def seal(self, batch_id: str) -> None:
        self.redis.hset(self.key(batch_id), "sealed", "true")

    def mark_finished_once(self, batch_id: str) -> bool:
        """True for exactly one caller once the batch is complete (who then sends its callback)."""
        batch = self.get(batch_id)
        if batch.state is not BatchState.finished:
            return False
        return bool(self.redis.hsetnx(self.key(batch_id), "finished_at", utcnow().isoformat()))

    def job_ids(self, batch_id: str, start: int = 0, stop: int = -1) -> list[str]:
        return list(self.redis.lrange(self.key(batch_id) + ":jobs", start, stop))

    def failed_ids(self, batch_id: str, limit: int = 100) -> list[str]:
        return list(self.redis.zrange(self.key(batch_id) + ":failed", 0, limit - 1))

    def record_listing_error(self, batch_id: str, error: str) -> None:
        """The server-side listing of a prefix batch stopped for good: seal the batch with the reason."""
        self.redis.hset(self.key(batch_id), mapping={"error": error, "sealed": "true"})

    def listing_error(self, batch_id: str) -> str | None:
        """Why the server-side listing of a prefix batch stopped, when it failed (set by the expand task)."""
        return self.redis.hget(self.key(batch_id), "error") or None

    def recent(self, limit: int = 20) -> list[Batch]:
        out = []
        for batch_id in self.redis.zrevrange(self.recent_key, 0, limit - 1):
            try:
                out.append(self.get(batch_id))
            except JobNotFoundError:
                continue
        return out


def _dump(value) -> str:
    return json.dumps(value)


def _load(value: str):
    return json.loads(value)
