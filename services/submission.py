"""Creating queued jobs: the record and its message in one Redis script (the Celery task id is the job id)."""

from __future__ import annotations

import time

from celery import Celery

from .celery_app import RESTORE_TASK, encode_message, send
from .config import Settings
from .errors import InvalidJobError, QueueFullError
from .jobs import Job, JobRequest, JobState, Task
from .jobstore import JobStore
from .storage import is_s3_url, local_path, split_s3_url


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
        queue = self.settings.queue_for(job.task.value)
        # Unset fields are left out of the message (the worker's Job has the same defaults): 40 % of the job.
        message = encode_message(self.app, RESTORE_TASK, [job.model_dump(mode="json", exclude_none=True)], queue,
                                 job.id)
        return self.store.create_queued(
            job, queue, message, [self.settings.queue_for(t.value) for t in Task],
            queue_cap=self.settings.max_queued_jobs_per_queue if capped else 0,
            total_cap=self.settings.max_queued_jobs if capped else 0, overwrite=overwrite)

    def check_capacity(self, task: Task, count: int) -> None:
        """Raises ``QueueFullError`` unless ``count`` more jobs of ``task`` fit under the queued-job caps (a batch
        checks once for all its inputs, then queues them uncapped)."""
        queues = [self.settings.queue_for(t.value) for t in Task]
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
