"""Creating queued jobs: record first, then enqueue (the Celery task id is the job id)."""

from __future__ import annotations

import time

from celery import Celery

from .celery_app import RESTORE_TASK, send
from .config import Settings
from .errors import InvalidJobError
from .jobs import Job, JobRequest, JobState
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
        self.store.create(job)
        self.enqueue(job)
        return job

    def enqueue(self, job: Job) -> None:
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
