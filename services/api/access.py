"""Which jobs and batches a token may see and act on.

A token sees what it created (``owner`` is its name). Jobs and batches created outside the API (the CLI,
backfills) have no owner; a token sees those when all their locations lie inside its allow-list, so an operations
token scoped to ``s3://scans/`` can follow a backfill of ``s3://scans/2019/`` while a customer token scoped to its
own bucket sees nothing else. Anything a token may not see reads as "not found" (404), which reveals nothing.
"""

from __future__ import annotations

from ..errors import BatchNotFoundError, JobNotFoundError
from ..jobs import Job
from ..queue.batch_store import Batch
from .auth import Principal


def can_see_job(principal: Principal, job: Job) -> bool:
    if job.owner is not None:
        return job.owner == principal.name
    return principal.allows(job.input_url) and principal.allows(job.output_url)


def can_see_batch(principal: Principal, batch: Batch) -> bool:
    if batch.owner is not None:
        return batch.owner == principal.name
    locations = [url for url in (batch.source, batch.output_prefix) if url]
    return bool(locations) and all(principal.allows(url) for url in locations)


def hidden_job(job_id: str) -> JobNotFoundError:
    return JobNotFoundError(f"no job {job_id!r} (unknown id, expired, or not visible to this token)")


def hidden_batch(batch_id: str) -> BatchNotFoundError:
    return BatchNotFoundError(f"no batch {batch_id!r} (unknown id, or not visible to this token)")
