"""Creating queued jobs, one (``Submitter``) or a batch of them (``BatchSubmitter``).

A job's record and its message go to Redis in one script (the Celery task id is the job id). Every input of a batch
gets a deterministic job id (uuid5 of batch id + input URL), and membership is recorded in ``batch:<id>:members``, so
re-running an interrupted expansion never queues an input twice nor skips one; prefix batches are expanded
server-side by the workers (``expand_step``).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import time
import uuid
from collections.abc import Iterable

from celery import Celery

from ..config import Settings
from ..errors import InvalidJobError, QueueFullError, QuotaExceededError
from ..jobs import (DEFAULT_INCLUDE, Job, JobOptions, JobRequest, JobState, Profile, Task, derive_output_url,
                    in_restored_folder, output_under)
from ..storage import StorageRouter, is_s3_url, local_path, matches_any, relative_below, split_s3_url
from ..webhooks import batch_finished_notifications
from .batch_store import Batch, BatchStore
from .celery_app import RESTORE_TASK, encode_message, send, task_queue_names
from .job_store import JobStore

EXPAND_TASK = "imgrestore.expand_batch"
INPUTS_SOURCE = "inputs:"  # the expand task's root for an inputs batch: its saved inputs, not a prefix listing
ENQUEUE_CHUNK = 200  # inputs of a batch queued per round trip (pipelined scripts and membership writes)
# Request ids hash the include patterns. The default list gained *.gif and *.pdf (one list with ``run``); hashing the
# default as the list it replaced keeps the ids of backfills and watches started before, so ``--resume`` (and a
# watch's state file) still finds them.
_ID_OF_DEFAULT_INCLUDE = ["*.png", "*.jpg", "*.jpeg", "*.tif", "*.tiff", "*.webp", "*.bmp"]
_NAMESPACE = uuid.UUID("6f1c8e0e-3c0a-4d0e-9a57-0b7f6f1d2a11")


class Submitter:
    def __init__(self, settings: Settings, store: JobStore, app: Celery) -> None:
        self.settings = settings
        self.store = store
        self.app = app

    def submit(self, request: JobRequest, owner: str | None = None) -> Job:
        """Records and queues the job; ``owner`` is the name of the API token that asked for it (None elsewhere)."""
        validate_urls(request.input_url, request.output_url)
        job = Job.from_request(request, owner=owner)
        self.create_queued(job)
        return job

    def create_queued(self, job: Job, overwrite: bool = True, capped: bool = True) -> bool:
        """Records ``job`` and queues its message as one unit (``JobStore.create_queued``): a Redis that refuses
        the write leaves neither, and the caller gets the Redis error. ``capped``: the queued-job caps apply
        (``QueueFullError``). True when queued; False when ``overwrite=False`` found the record (queued before)."""
        _, queue, message = self._queued_entry(job)
        owner_cap = self.settings.api_max_unfinished_jobs_per_token if capped else 0

        def create() -> bool:
            return self.store.create_queued(
                job, queue, message, task_queue_names(self.settings),
                queue_cap=self.settings.max_queued_jobs_per_queue if capped else 0,
                total_cap=self.settings.max_queued_jobs if capped else 0, overwrite=overwrite, owner_cap=owner_cap)

        try:
            queued = create()
        except QuotaExceededError as refused:
            if refused.scope != "token" or not job.owner or self._recounted(job.owner) >= owner_cap:
                raise
            queued = create()  # the count had drifted (expired records): once more with the true one
        if queued:
            self.announce([job])
        return queued

    def create_queued_many(self, jobs: list[Job], overwrite: bool = True) -> list[bool]:
        """``create_queued`` for several jobs in one round trip, uncapped (batches check the caps up front)."""
        entries = [self._queued_entry(job) for job in jobs]
        queued = self.store.create_queued_many(entries, task_queue_names(self.settings), overwrite=overwrite)
        self.announce([job for job, new in zip(jobs, queued) if new])
        return queued

    def _queued_entry(self, job: Job) -> tuple[Job, str, str]:
        """``(job, its queue, its message)``: defaults are left out of the message (the worker's Job rebuilds
        them), a third of the job."""
        queue = self.settings.queue_for(job.task.value)
        return job, queue, encode_message(RESTORE_TASK, [job.compact_dump()], queue, job.id)

    def announce(self, jobs: list[Job]) -> None:
        """Celery's ``task-sent`` event for each of ``jobs`` (queued), as ``send_task`` would have published it,
        when ``IMGRESTORE_TASK_SENT_EVENTS`` asks for them (Flower lists waiting tasks from these)."""
        if not self.settings.task_sent_events or not jobs:
            return
        with self.app.events.default_dispatcher() as dispatcher:
            for job in jobs:
                queue = self.settings.queue_for(job.task.value)
                dispatcher.send("task-sent", uuid=job.id, root_id=job.id, parent_id=None, name=RESTORE_TASK,
                                args=f"[job {job.id}]", kwargs="{}", retries=0, eta=None, expires=None,
                                queue=queue, exchange="", routing_key=queue)

    def check_owner_quota(self, owner: str | None, count: int) -> None:
        """Raises ``QuotaExceededError`` unless token ``owner`` may have ``count`` more unfinished jobs (a batch
        checks once for all its inputs, as ``check_capacity`` does)."""
        cap = self.settings.api_max_unfinished_jobs_per_token
        if not owner or not cap:
            return
        unfinished = self.store.unfinished_of(owner)
        if unfinished + count > cap:
            unfinished = self._recounted(owner)
        if unfinished + count > cap:
            raise QuotaExceededError(
                f"token {owner!r} has {unfinished} jobs queued or running and asks for {count} more: over its quota "
                f"of {cap} (IMGRESTORE_API_MAX_UNFINISHED_JOBS_PER_TOKEN); retry once some have finished",
                scope="token", waiting=unfinished, cap=cap)

    def _recounted(self, owner: str) -> int:
        """Token ``owner``'s count of unfinished jobs recomputed from their records, when a recount is due (the
        quota refused it); else its kept count. Only refusals pay for it: the submit path reads one counter."""
        recounted = self.store.recount_unfinished_if_due(owner, self.settings.api_quota_recount_interval)
        return self.store.unfinished_of(owner) if recounted is None else recounted

    def check_capacity(self, task: Task, count: int) -> None:
        """Raises ``QueueFullError`` unless ``count`` more jobs of ``task`` fit under the queued-job caps (a batch
        checks once for all its inputs, then queues them uncapped)."""
        queues = task_queue_names(self.settings)
        with self.store.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.llen(queue)
            lengths = dict(zip(queues, map(int, pipe.execute())))
        queue = self.settings.queue_for(task.value)
        for scope, waiting, cap, setting in (
                (queue, lengths[queue], self.settings.max_queued_jobs_per_queue,
                 "IMGRESTORE_MAX_QUEUED_JOBS_PER_QUEUE"),
                ("global", sum(lengths.values()), self.settings.max_queued_jobs, "IMGRESTORE_MAX_QUEUED_JOBS")):
            if cap and waiting + count > cap:
                raise QueueFullError(f"{waiting} jobs queued ({scope}) and {count} more asked for: over the cap of "
                                     f"{cap} ({setting}); retry once workers have drained some",
                                     scope=scope, waiting=waiting, cap=cap)

    def enqueue(self, job: Job) -> None:
        """Publishes the message of a job already recorded (re-queues, orphans)."""
        send(self.app, RESTORE_TASK, [job.model_dump(mode="json")], self.settings.queue_for(job.task.value), job.id)

    def requeue(self, job_id: str) -> Job:
        """Sends a finished (usually failed) job again, as the same job id."""
        job = self.store.requeue(job_id)
        self.enqueue(job)
        return job

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 0.25) -> Job:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.store.get(job_id)
            if job.state in (JobState.succeeded, JobState.failed):
                return job
            if deadline is not None and time.monotonic() > deadline:
                return job
            time.sleep(poll)


def validate_urls(input_url: str, output_url: str | None) -> None:
    """Fails early, at submission, on URLs a worker could never use."""
    for url in filter(None, (input_url, output_url)):
        if is_s3_url(url):
            _, key = split_s3_url(url)
            if not key or key.endswith("/"):
                raise InvalidJobError(f"{url}: names a prefix, not an object")
        else:
            local_path(url)  # raises on unknown schemes


def batch_job_id(batch_id: str, input_url: str) -> str:
    return uuid.uuid5(_NAMESPACE, f"{batch_id}\n{input_url}").hex


def output_for(batch: Batch, input_url: str, root: str | None) -> str:
    """With an output prefix, the input's path below ``root`` (or its file name) goes under it; else the default."""
    fmt = batch.options.output_format
    if not batch.output_prefix:
        return derive_output_url(input_url, batch.task, batch.profile, fmt)
    relative = (relative_below(input_url, root) if root else None) or posixpath.basename(input_url)
    return output_under(batch.output_prefix, relative, fmt)


def is_earlier_output(batch: Batch, url: str, root: str) -> bool:
    """True for what a listing of ``root`` must not take as an input: results under the batch's own output prefix
    or folder, and the ``restored/<variant>/`` folders that default outputs go to (whoever wrote them)."""
    if batch.output_prefix and relative_below(url, batch.output_prefix) is not None:
        return True
    relative = relative_below(url, root)
    return in_restored_folder(url if relative is None else relative)


def prefix_root(prefix_url: str) -> str:
    """The listing root of a prefix: ``s3://b/scans`` and ``s3://b/scans/`` both mean the folder ``scans/``."""
    return prefix_url if prefix_url.endswith("/") else prefix_url + "/"


def request_id(kind: str, task: Task, profile: Profile, root: str, output: str, include: Iterable[str],
               options: JobOptions) -> str:
    """``kind-<16 hex>``: the same request over a prefix (a backfill, a watched folder) gives the same id, and so
    finds its state again after a restart or ``--resume``."""
    patterns = sorted(include)
    if patterns == sorted(DEFAULT_INCLUDE):
        patterns = sorted(_ID_OF_DEFAULT_INCLUDE)
    key = json.dumps([task.value, profile.value, root, output.rstrip("/"), patterns, options.id_fields()])
    return f"{kind}-" + hashlib.sha256(key.encode()).hexdigest()[:16]


class BatchSubmitter:
    def __init__(self, settings: Settings, jobs: JobStore, batches: BatchStore, submitter: Submitter,
                 app: Celery) -> None:
        self.settings = settings
        self.jobs = jobs
        self.batches = batches
        self.submitter = submitter
        self.app = app

    def add(self, batch: Batch, input_url: str, root: str | None = None) -> Job | None:
        """Queues ``input_url`` as a job of ``batch`` unless it already is one; returns the new job or None."""
        added = self.add_many(batch, [input_url], root)
        return added[0] if added else None

    def add_many(self, batch: Batch, input_urls: list[str], root: str | None = None) -> list[Job]:
        """Queues each of ``input_urls`` that is not a job of ``batch`` yet; returns the new jobs. Three round trips
        per ``ENQUEUE_CHUNK`` inputs: membership, the records with their messages, then membership again."""
        if len(input_urls) > ENQUEUE_CHUNK:
            return [job for start in range(0, len(input_urls), ENQUEUE_CHUNK)
                    for job in self.add_many(batch, input_urls[start:start + ENQUEUE_CHUNK], root)]
        job_ids = [batch_job_id(batch.id, url) for url in input_urls]
        known = self.batches.members_among(batch.id, job_ids)
        jobs: list[Job] = []
        taken: set[str] = set()  # an input named twice is one job
        for url, job_id, member in zip(input_urls, job_ids, known):
            if member or job_id in taken:
                continue
            taken.add(job_id)
            request = JobRequest(task=batch.task, profile=batch.profile, input_url=url,
                                 output_url=output_for(batch, url, root), options=batch.options, batch_id=batch.id)
            validate_urls(request.input_url, request.output_url)
            if request.output_url == url:  # every way into a batch (API, backfill, prefix listing) stops here
                raise InvalidJobError(f"{url}: its output would be the input itself; restoring in place would "
                                      "destroy it (choose another output prefix)")
            jobs.append(Job.from_request(request, id=job_id, owner=batch.owner))
        # A retry after a half-done add must not reset a job that already ran: an existing record was queued with
        # its message, so it is left alone. Uncapped: an explicit batch checked the caps once for all its inputs,
        # a prefix batch is paced by IMGRESTORE_BATCH_MAX_IN_FLIGHT.
        self.submitter.create_queued_many(jobs, overwrite=False)
        self.batches.add_members(batch.id, [job.id for job in jobs])  # after they are queued: a crash re-queues
        return jobs

    def in_flight(self, batch_id: str) -> int:
        batch = self.batches.get(batch_id)
        return batch.total - batch.done

    def submit_inputs(self, batch: Batch, inputs: Iterable[str]) -> Batch:
        """A batch of explicit inputs: up to ``api_inline_batch_inputs`` queued now and sealed; more are saved and
        returned at once (``submitting``), queued by the workers as a prefix batch is (``expand_step``)."""
        inputs = list(inputs)
        if len(inputs) > self.settings.api_max_batch_inputs:
            raise InvalidJobError(f"{len(inputs)} inputs: at most {self.settings.api_max_batch_inputs} a batch "
                                  "(use a prefix or a backfill for more)")
        for url in inputs:
            validate_urls(url, None)
        self.submitter.check_capacity(batch.task, len(inputs))
        self.submitter.check_owner_quota(batch.owner, len(inputs))
        self.batches.create(batch)
        if len(inputs) > self.settings.api_inline_batch_inputs:
            self.batches.save_inputs(batch.id, inputs)
            self._send_expand(batch, INPUTS_SOURCE, [])
            return batch
        self.add_many(batch, inputs)
        self.seal(batch.id)
        return self.batches.get(batch.id)

    def seal(self, batch_id: str, listing_error: str | None = None) -> None:
        """No more jobs will be added (``listing_error``: because the prefix listing failed for good); then the
        batch's finished webhook if every job has already ended — their finishes saw the batch unsealed and sent
        nothing. Each side writes, then reads: a job's finish counts it, then reads the batch; the seal marks it,
        then reads the counts. So at least one of them sees the batch complete, and ``mark_finished_once`` (the
        same ``HSETNX`` the job's side claims) lets exactly one send."""
        if listing_error is None:
            self.batches.seal(batch_id)
        else:
            self.batches.record_listing_error(batch_id, listing_error)
        self.notify_if_finished(batch_id)

    def notify_if_finished(self, batch_id: str) -> None:
        """Queues the batch's finished webhook when it is complete and nobody has claimed it yet."""
        for note in batch_finished_notifications(self.batches, batch_id):
            note.queue(self.app, self.settings.control_queue)

    def _send_expand(self, batch: Batch, root: str, include: list[str]) -> None:
        try:
            send(self.app, EXPAND_TASK, [batch.id, root, include, ""], self.settings.control_queue)
        except BaseException:
            # No message, no expansion: the batch would read "submitting" for ever, and the client, who gets the
            # error and not its id, retries as a new batch.
            self.batches.discard(batch.id)
            raise

    def cancel(self, batch_id: str) -> tuple[int, int]:
        """Stops the batch: nothing more is queued (a background expansion stops), its queued jobs are cancelled,
        running ones finish. Returns (cancelled, still running)."""
        self.batches.cancel(batch_id)
        cancelled = self.jobs.cancel_queued(self.batches.job_ids(batch_id), batch_id)
        batch = self.batches.get(batch_id)
        return cancelled, max(0, batch.total - batch.done)

    def submit_prefix(self, batch: Batch, prefix_url: str, include: list[str] | None = None) -> Batch:
        """A batch of everything under an S3 prefix: returned at once, expanded server-side by the workers."""
        if not prefix_url.startswith("s3://"):
            raise InvalidJobError(f"{prefix_url}: a batch prefix must be an s3:// URL")
        batch.source = prefix_root(prefix_url)
        self.batches.create(batch)
        self._send_expand(batch, batch.source, include or DEFAULT_INCLUDE)
        return batch

    def expand_step(self, batch_id: str, root: str, include: list[str], start_after: str,
                    storage: StorageRouter, max_in_flight: int, page_budget: int = 5) -> str | None:
        """Lists up to ``page_budget`` pages after ``start_after`` and queues their jobs.

        Returns the cursor to continue from, or None when the prefix is exhausted (the batch is then sealed).
        Stops early, returning the cursor, when the batch already has ``max_in_flight`` unfinished jobs.
        """
        batch = self.batches.get(batch_id)
        if batch.cancelled:
            return None
        if root == INPUTS_SOURCE:
            return self._expand_inputs(batch, int(start_after or 0), max_in_flight, page_budget)
        listed = 0
        cursor = start_after
        pending: list[str] = []
        for info in storage.list(root, start_after or None):
            if matches_any(info.url, include) and not is_earlier_output(batch, info.url, root):
                pending.append(info.url)
            cursor = info.url
            listed += 1
            if len(pending) >= ENQUEUE_CHUNK or listed % 1000 == 0:
                self.add_many(batch, pending, root)
                pending = []
            if listed % 1000 == 0:  # the cursor never passes an input not queued yet
                self.batches.save_cursor(batch_id, cursor)
                if self._stopped(batch_id):
                    return None
                if listed >= 1000 * page_budget or self.in_flight(batch_id) >= max_in_flight:
                    return cursor
        self.add_many(batch, pending, root)
        self.seal(batch_id)
        self._stopped(batch_id)
        return None

    def _expand_inputs(self, batch: Batch, start: int, max_in_flight: int, page_budget: int,
                       page: int = 1000) -> str | None:
        """``expand_step`` for the saved inputs of a large inputs batch; the cursor is the next input's index."""
        for _ in range(page_budget):
            urls = self.batches.inputs(batch.id, start, start + page - 1)
            self.add_many(batch, urls)
            start += len(urls)
            if len(urls) < page:
                break
            self.batches.save_cursor(batch.id, str(start))
            if self._stopped(batch.id):
                return None
            if self.in_flight(batch.id) >= max_in_flight:
                return str(start)
        else:
            return str(start)
        self.seal(batch.id)
        self._stopped(batch.id)
        return None

    def _stopped(self, batch_id: str) -> bool:
        """True when the batch was cancelled meanwhile: what this expansion queued since the cancel read the job
        list is cancelled too (so none escapes), and the expansion stops."""
        if not self.batches.is_cancelled(batch_id):
            return False
        self.jobs.cancel_queued(self.batches.job_ids(batch_id), batch_id)
        # The cancel's own check ran before these jobs were cancelled: they may have been the batch's last.
        self.notify_if_finished(batch_id)
        return True
