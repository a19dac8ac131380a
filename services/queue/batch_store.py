"""Batches: many jobs submitted together (an API batch or a backfill), with counts, progress and failures.

Keys (under ``settings.key_prefix``), written only here and by ``JobStore`` (which counts finished jobs into them):
``batch:<id>`` hash (the fields below; ``cursor``, where a listing resumes; ``error``, why a prefix listing
stopped; counters ``succeeded``/``failed`` kept by ``JobStore`` as jobs finish), ``batch:<id>:jobs`` list of job
ids, ``batch:<id>:members`` set of the same ids (membership makes adding an input idempotent),
``batch:<id>:failed`` sorted set of failed job ids, ``batches:recent`` sorted set of batch ids by creation time,
``batch:<id>:inputs`` list of the input URLs of a large inputs batch that the workers have yet to queue (dropped once
it is sealed). ``cancelled`` in the hash: ``DELETE /v1/batches/{id}`` asked that nothing more be queued or run.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from enum import Enum

from pydantic import BaseModel, Field

from ..errors import BatchNotFoundError
from ..jobs import JobOptions, Profile, Task, utcnow
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
    cancelled: bool = False  # cancelled: nothing more is queued, queued jobs were cancelled
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
        return self.jobs.batch_key(batch_id)

    def _members_key(self, batch_id: str) -> str:
        return self.key(batch_id) + ":members"

    def _jobs_key(self, batch_id: str) -> str:
        return self.key(batch_id) + ":jobs"

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
            raise BatchNotFoundError(f"no batch {batch_id!r} (unknown id, or expired)")
        data = {k: (_load(v) if k in ("options", "sealed", "cancelled") else v) for k, v in raw.items() if v != ""}
        for name in _INT_FIELDS:
            data[name] = int(data.get(name, 0))
        return Batch.model_validate(data)

    def exists(self, batch_id: str) -> bool:
        return bool(self.redis.exists(self.key(batch_id)))

    def has_member(self, batch_id: str, job_id: str) -> bool:
        return bool(self.redis.sismember(self._members_key(batch_id), job_id))

    def members_among(self, batch_id: str, job_ids: list[str]) -> list[bool]:
        """For each of ``job_ids``, whether it is a member already (one round trip)."""
        if not job_ids:
            return []
        return [bool(flag) for flag in self.redis.smismember(self._members_key(batch_id), job_ids)]

    def add_member(self, batch_id: str, job_id: str) -> None:
        """Counts a job into the batch, once. Call after the job is queued: a crash in between re-queues the same
        (deterministic) job id on the next attempt, and it is counted then; a job is never counted unqueued."""
        self.add_members(batch_id, [job_id])

    def add_members(self, batch_id: str, job_ids: list[str]) -> None:
        """``add_member`` for several jobs (not members yet), in one transaction."""
        if not job_ids:
            return
        with self.redis.pipeline() as pipe:
            pipe.sadd(self._members_key(batch_id), *job_ids)
            pipe.hincrby(self.key(batch_id), "total", len(job_ids))
            pipe.rpush(self._jobs_key(batch_id), *job_ids)
            pipe.execute()

    def cursor(self, batch_id: str) -> str | None:
        """The last input listed and queued, where an interrupted listing resumes (None: from the start)."""
        return self.redis.hget(self.key(batch_id), "cursor") or None

    def save_cursor(self, batch_id: str, cursor: str) -> None:
        self.redis.hset(self.key(batch_id), "cursor", cursor)

    def seal(self, batch_id: str) -> None:
        with self.redis.pipeline() as pipe:
            pipe.hset(self.key(batch_id), "sealed", "true")
            pipe.delete(self._inputs_key(batch_id))  # all queued (or cancelled): nothing left to expand
            pipe.execute()

    # --- large inputs batches, expanded by the workers ---
    def _inputs_key(self, batch_id: str) -> str:
        return self.key(batch_id) + ":inputs"

    def save_inputs(self, batch_id: str, inputs: list[str], chunk: int = 5_000) -> None:
        """The inputs the workers will queue (``BatchSubmitter.expand_step``), in order."""
        with self.redis.pipeline() as pipe:
            for start in range(0, len(inputs), chunk):
                pipe.rpush(self._inputs_key(batch_id), *inputs[start:start + chunk])
            pipe.execute()

    def inputs(self, batch_id: str, start: int, stop: int) -> list[str]:
        """Saved inputs ``start``..``stop`` (inclusive); [] past the end or once the batch is sealed."""
        return list(self.redis.lrange(self._inputs_key(batch_id), start, stop))

    # --- cancelling ---
    def cancel(self, batch_id: str) -> None:
        """Nothing more will be queued: a background expansion stops at its next check, and the batch is sealed
        with the jobs it has (those still queued are cancelled by the caller, ``JobStore.cancel_queued``)."""
        with self.redis.pipeline() as pipe:
            pipe.hset(self.key(batch_id), mapping={"cancelled": "true", "sealed": "true"})
            pipe.delete(self._inputs_key(batch_id))
            pipe.execute()

    def is_cancelled(self, batch_id: str) -> bool:
        return self.redis.hget(self.key(batch_id), "cancelled") == "true"

    def mark_finished_once(self, batch_id: str) -> bool:
        """True for exactly one caller once the batch is complete (who then sends its callback)."""
        batch = self.get(batch_id)
        if batch.state is not BatchState.finished:
            return False
        return bool(self.redis.hsetnx(self.key(batch_id), "finished_at", utcnow().isoformat()))

    def job_ids(self, batch_id: str, start: int = 0, stop: int = -1) -> list[str]:
        return list(self.redis.lrange(self._jobs_key(batch_id), start, stop))

    def failed_ids(self, batch_id: str, limit: int = 100) -> list[str]:
        return list(self.redis.zrange(self.jobs.batch_failed_key(batch_id), 0, limit - 1))

    def record_listing_error(self, batch_id: str, error: str) -> None:
        """The server-side listing of a prefix batch stopped for good: seal the batch with the reason."""
        self.redis.hset(self.key(batch_id), mapping={"error": error, "sealed": "true"})

    def listing_error(self, batch_id: str) -> str | None:
        """Why the server-side listing of a prefix batch stopped, when it failed (set by the expand task)."""
        return self.redis.hget(self.key(batch_id), "error") or None

    def recent_ids(self, limit: int = 20) -> list[str]:
        """Ids of the newest batches, newest first (some may have expired: ``get`` then raises)."""
        return list(self.redis.zrevrange(self.recent_key, 0, limit - 1))

    def recent(self, limit: int = 20) -> list[Batch]:
        out = []
        for batch_id in self.recent_ids(limit):
            try:
                out.append(self.get(batch_id))
            except BatchNotFoundError:
                continue
        return out


def _dump(value) -> str:
    return json.dumps(value)


def _load(value: str):
    return json.loads(value)
