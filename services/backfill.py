"""Backfills: restore everything under a prefix or folder — resumable, with backpressure and a failure report.

Two runners share one plan:
- ``QueuedBackfill`` (an ``s3://`` source): lists the prefix page by page and queues jobs for the workers as a
  batch of kind ``backfill``, never more than ``max_in_flight`` unfinished at once. Job ids are derived from the
  backfill id and the input, and membership lives in Redis, so ``--resume`` after a crash or Ctrl-C queues exactly
  the inputs that were never queued and waits for the rest: nothing twice, nothing skipped. While it waits it also
  sweeps for orphans (``services.queue.recovery``), so it never waits on a job that nobody holds, workers or not.
- ``EmbeddedBackfill`` (local folders, or ``--embedded``): restores in this process; finished inputs are appended
  to a state file (JSON lines) that ``--resume`` reads back.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import redis
from PIL import Image

from .errors import InvalidJobError
from .jobs import DEFAULT_INCLUDE, Job, JobOptions, Profile, Task
from .queue.batch_store import Batch, BatchStore
from .queue.job_store import JobStore
from .queue.recovery import OrphanSweeper
from .queue.submission import ENQUEUE_CHUNK, BatchSubmitter, is_earlier_output, output_for, prefix_root, request_id
from .restorer import Restorer, attempt
from .storage import ObjectInfo, SkippedKey, StorageRouter, is_s3_url, matches_any

log = logging.getLogger(__name__)

Progress = Callable[["BackfillStatus"], None]


@dataclass(frozen=True)
class PrefixPlan:
    """What to restore below one folder or S3 prefix, and where to: what a backfill and a watch share.

    The id is derived from the request (same request, same id), and is what a restart finds its state by.
    """
    task: Task
    source: str  # s3://bucket/prefix/ or a folder
    output: str  # s3://bucket/prefix/ or a folder
    profile: Profile = Profile.auto
    options: JobOptions = field(default_factory=JobOptions)
    include: tuple[str, ...] = tuple(DEFAULT_INCLUDE)

    ID_PREFIX: ClassVar[str]
    KIND: ClassVar[str]  # the batch kind its records carry

    @property
    def root(self) -> str:
        return prefix_root(self.source)

    @property
    def plan_id(self) -> str:
        return request_id(self.ID_PREFIX, self.task, self.profile, self.root, self.output, self.include, self.options)

    def batch(self, owner: str | None = None) -> Batch:
        return Batch(id=self.plan_id, kind=self.KIND, task=self.task, profile=self.profile, options=self.options,
                     source=self.root, output_prefix=self.output, owner=owner)


@dataclass(frozen=True)
class BackfillPlan(PrefixPlan):
    ID_PREFIX: ClassVar[str] = "bf"
    KIND: ClassVar[str] = "backfill"

    @property
    def backfill_id(self) -> str:
        """What ``--resume`` finds."""
        return self.plan_id

    def inputs(self, storage: StorageRouter, start_after: str | None = None,
               on_skipped: SkippedKey | None = None) -> Iterator[ObjectInfo]:
        """What the backfill restores: matching files below the root, except its own output folder and the
        ``restored/<variant>/`` folders of earlier default outputs (compared as resolved paths, so ``--output
        ./scans/clean`` over ``./scans`` is recognised in the ``scans/clean/...`` paths the listing yields).
        ``on_skipped(url, reason)``: matching keys the listing refused ('.'/'..' segments, empty segments)."""
        batch, include = self.batch(), list(self.include)

        def skipped(url: str, reason: str) -> None:
            if on_skipped is not None and matches_any(url, include):
                on_skipped(url, reason)

        for info in storage.list(self.root, start_after, skipped):
            if matches_any(info.url, include) and not is_earlier_output(batch, info.url, self.root):
                yield info


@dataclass
class BackfillStatus:
    backfill_id: str
    listed: int = 0  # inputs found so far
    queued: int = 0  # queued by this run (service mode) or taken up (embedded)
    skipped: int = 0  # already handled by an earlier run
    succeeded: int = 0
    failed: int = 0
    done_before: int = 0  # finished by earlier runs: not part of this run's rate
    listing_done: bool = False
    unsafe_keys: int = 0  # listed keys refused as inputs ('.'/'..' or empty segments): in the failure report
    expected: int | None = None  # inputs in all, once a separate count has finished (the listing may be throttled)
    started: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def rate(self) -> float:
        return (self.done - self.done_before) / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def total(self) -> int | None:
        """Inputs in all: the listing's count once done, else the separate count once it has finished."""
        return self.listed if self.listing_done else self.expected


def count_in_background(plan: BackfillPlan, storage: StorageRouter, status: BackfillStatus) -> threading.Thread:
    """Counts the inputs apart from the listing, which waits for capacity (``--max-in-flight``) and so would know
    the total only at the end: progress and ETA get it after one quick listing (page by page, memory flat)."""
    def count() -> None:
        try:
            status.expected = sum(1 for _ in plan.inputs(storage))
        except Exception as exc:  # the count only feeds the progress line; the backfill itself reports errors
            log.warning("could not count the backfill's inputs", extra={"backfill_id": plan.backfill_id,
                                                                       "error": str(exc)})

    thread = threading.Thread(target=count, name="backfill-count", daemon=True)
    thread.start()
    return thread


class BackfillExists(InvalidJobError):
    code = "backfill_exists"


# --- service mode ------------------------------------------------------------------------------------------------
class QueuedBackfill:
    def __init__(self, plan: BackfillPlan, jobs: JobStore, batches: BatchStore, submitter: BatchSubmitter,
                 storage: StorageRouter, max_in_flight: int, poll: float = 0.5,
                 sweeper: OrphanSweeper | None = None, sweep_interval: float = 30.0) -> None:
        self.plan = plan
        self.jobs = jobs
        self.batches = batches
        self.submitter = submitter
        self.storage = storage
        self.max_in_flight = max_in_flight
        self.poll = poll
        self.status = BackfillStatus(plan.backfill_id)
        self._estimate = max_in_flight  # unknown at first: ask Redis before the first job
        self.sweeper = sweeper
        self.sweep_interval = sweep_interval
        self._last_sweep = time.monotonic()
        self._skipped = SkippedKeys(self.status)

    def open(self, resume: bool) -> Batch:
        batch_id = self.plan.backfill_id
        if self.batches.exists(batch_id):
            existing = self.batches.get(batch_id)
            if not resume:
                raise BackfillExists(
                    f"backfill {batch_id} of {self.plan.root} already exists ({existing.done}/{existing.total} "
                    "done); add --resume to continue it"
                )
            return existing
        return self.batches.create(self.plan.batch())

    def run(self, resume: bool, on_progress: Progress, wait: bool = True) -> BackfillStatus:
        batch = self.open(resume)
        status = self.status
        status.done_before = batch.done
        cursor = self.batches.cursor(batch.id)
        if not batch.sealed:
            # Queued a chunk per round trip (pipelined); a quarter of the in-flight cap at most, so the queue is
            # topped up while three quarters of it still wait.
            chunk = max(1, min(ENQUEUE_CHUNK, self.max_in_flight // 4))
            pending: list[ObjectInfo] = []
            try:
                for info in self.plan.inputs(self.storage, cursor, self._skipped.note):
                    pending.append(info)
                    if len(pending) >= chunk:
                        inputs, pending = pending, []
                        self._enqueue(batch, inputs, on_progress)
            finally:  # the listing failed or ended: what it gave is queued all the same
                self._enqueue(batch, pending, on_progress)
            _retrying(lambda: self.submitter.seal(batch.id))
        status.listing_done = True
        self._refresh(batch.id)
        on_progress(status)
        while wait and status.done < self.batches.get(batch.id).total:
            time.sleep(self.poll)
            self._refresh(batch.id)
            self._maybe_sweep()
            on_progress(status)
        return status

    def _enqueue(self, batch: Batch, inputs: list[ObjectInfo], on_progress: Progress) -> None:
        if not inputs:
            return
        status = self.status
        self._wait_for_capacity(batch.id, on_progress, len(inputs))
        before = status.listed
        added = _retrying(lambda: self.submitter.add_many(batch, [info.url for info in inputs], self.plan.root))
        status.listed += len(inputs)
        status.queued += len(added)
        status.skipped += len(inputs) - len(added)
        if status.listed // 1000 > before // 1000:  # a resumed listing restarts at most one page back
            _retrying(lambda: self.batches.save_cursor(batch.id, inputs[-1].url))
            self._refresh(batch.id)
            on_progress(status)

    def _refresh(self, batch_id: str) -> None:
        batch = _retrying(lambda: self.batches.get(batch_id))
        self.status.succeeded, self.status.failed = batch.succeeded, batch.failed
        if self.status.listing_done:
            self.status.listed = batch.total

    def _wait_for_capacity(self, batch_id: str, on_progress: Progress, count: int = 1) -> None:
        """Blocks until ``count`` more jobs fit under ``max_in_flight`` unfinished ones. Redis is asked only when
        the local estimate (last answer + jobs queued since) reaches the limit, not once per key."""
        self._estimate += count
        if self._estimate < self.max_in_flight:
            return
        while (in_flight := _retrying(lambda: self.submitter.in_flight(batch_id))) + count > self.max_in_flight:
            self._refresh(batch_id)
            self._maybe_sweep()
            on_progress(self.status)
            time.sleep(self.poll)
        self._estimate = in_flight + count

    def _maybe_sweep(self) -> None:
        """Every ``sweep_interval`` seconds of waiting: re-queue orphans, as every worker does (one winner each)."""
        if self.sweeper is None or time.monotonic() - self._last_sweep < self.sweep_interval:
            return
        self._last_sweep = time.monotonic()
        try:
            self.sweeper.sweep_if_my_turn(self.sweep_interval)
        except Exception as exc:  # Redis or the broker away: waiting goes on, the next round sweeps again
            log.warning("orphan sweep failed", extra={"backfill_id": self.plan.backfill_id, "error": str(exc)})

    def failures(self) -> Iterator[dict]:
        yield from self._skipped.records
        for job_id in self.batches.failed_ids(self.plan.backfill_id, limit=10**9):
            job = self.jobs.get(job_id)
            yield {"input": job.input_url, "job_id": job.id, **(job.error.model_dump() if job.error else {})}


class SkippedKeys:
    """Keys the listing refused, as failure-report records (``state: skipped``): never written, but reported."""

    def __init__(self, status: BackfillStatus) -> None:
        self.status = status
        self.records: list[dict] = []

    def note(self, url: str, reason: str) -> None:
        self.status.unsafe_keys += 1
        self.records.append({"input": url, "state": "skipped", "type": "unsafe_key", "message": reason})


def _retrying(call: Callable, attempts: int = 60, delay: float = 0.5):
    """Redis restarts and failovers: keep trying for ~30 s before giving up."""
    for tried in range(attempts):
        try:
            return call()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError):
            if tried == attempts - 1:
                raise
            time.sleep(delay)


# --- embedded mode -----------------------------------------------------------------------------------------------
class EmbeddedBackfill:
    def __init__(self, plan: BackfillPlan, restorer: Restorer, state_file: Path) -> None:
        self.plan = plan
        self.restorer = restorer
        self.state_file = state_file
        self.status = BackfillStatus(plan.backfill_id)
        self._failures: list[dict] = []
        self._skipped = SkippedKeys(self.status)

    def _finished_inputs(self, resume: bool) -> dict[str, dict]:
        """The last record of every input an earlier run finished (succeeded or failed)."""
        if not self.state_file.exists():
            return {}
        if not resume:
            raise BackfillExists(f"backfill {self.plan.backfill_id} has a state file {self.state_file}; add "
                                 "--resume to continue it (or delete the file to start over)")
        finished: dict[str, dict] = {}
        for line in self.state_file.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill: that input is simply done again
            finished[record["input"]] = record
        return finished

    def run(self, resume: bool, on_progress: Progress) -> BackfillStatus:
        finished = self._finished_inputs(resume)
        status = self.status
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        batch = self.plan.batch()
        with self.state_file.open("a") as log:
            for info in self.plan.inputs(self.restorer.storage, on_skipped=self._skipped.note):
                status.listed += 1
                fingerprint = f"{info.size}:{info.etag or ''}"
                earlier = finished.get(info.url)
                if earlier is not None and earlier["fingerprint"] == fingerprint:
                    status.skipped += 1
                    status.done_before += 1
                    self._count(earlier)
                    on_progress(status)
                    continue
                job = Job(task=self.plan.task, profile=self.plan.profile, input_url=info.url,
                          output_url=output_for(batch, info.url, self.plan.root), options=self.plan.options)
                status.queued += 1
                record = {"input": info.url, "output": job.output_url, "fingerprint": fingerprint}
                done = attempt(self.restorer, job)  # one bad file never stops a backfill
                if done.error is None:
                    record["state"] = "succeeded"
                else:
                    record |= {"state": "failed", "type": done.error.type, "message": done.error.message}
                self._count(record)
                log.write(json.dumps(record) + "\n")
                log.flush()
                on_progress(status)
        status.listing_done = True
        on_progress(status)
        return status

    def _count(self, record: dict) -> None:
        if record["state"] == "succeeded":
            self.status.succeeded += 1
        else:
            self.status.failed += 1
            self._failures.append(record)

    def failures(self) -> Iterator[dict]:
        yield from self._skipped.records
        yield from self._failures


# --- dry run -----------------------------------------------------------------------------------------------------
@dataclass
class DryRunEstimate:
    count: int = 0
    bytes: int = 0
    megapixels: float = 0.0
    unreadable: int = 0


def image_megapixels(storage: StorageRouter, info: ObjectInfo, head_bytes: int = 256 * 1024) -> float | None:
    """Width × height from the header alone (a ranged read for S3); None when the header is not an image."""
    try:
        if is_s3_url(info.url):
            bucket, key = info.url[5:].split("/", 1)
            response = storage.s3.client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{head_bytes - 1}")
            data = response["Body"].read()
        else:
            with open(info.url, "rb") as fh:
                data = fh.read(head_bytes)
        with Image.open(io.BytesIO(data)) as image:
            return image.width * image.height / 1e6
    except Exception:
        return None


def estimate(plan: BackfillPlan, storage: StorageRouter, emit: Callable[[ObjectInfo, str], None],
             threads: int = 16) -> DryRunEstimate:
    """Lists what a backfill would process (``emit(input, output)``) and estimates the work from headers."""
    result = DryRunEstimate()
    # More threads than S3 connections only queue for a connection and make urllib3 warn "pool is full".
    threads = max(1, min(threads, storage.settings.s3_max_pool_connections))
    batch = plan.batch()

    def inspect(info: ObjectInfo) -> tuple[ObjectInfo, float | None]:
        return info, image_megapixels(storage, info)

    with ThreadPoolExecutor(threads) as pool:
        for info, megapixels in bounded_map(pool, inspect, plan.inputs(storage), window=threads * 8):
            result.count += 1
            result.bytes += info.size
            emit(info, output_for(batch, info.url, plan.root))
            if megapixels is None:
                result.unreadable += 1
            else:
                result.megapixels += megapixels
    return result


def bounded_map(pool: ThreadPoolExecutor, fn: Callable, items: Iterable, window: int) -> Iterator:
    """Like ``pool.map`` in order, but with at most ``window`` items in flight (``map`` would list them all)."""
    pending: deque[Future] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
