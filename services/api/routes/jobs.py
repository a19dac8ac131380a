"""`/v1/jobs`: submit one job, read it, list recent ones, cancel a queued one, preview its images."""

from __future__ import annotations

import logging
from contextlib import closing
from enum import Enum
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import Response as RawResponse

from ...imaging.documents import output_preview_url
from ...jobs import Job, JobRequest, JobState, derive_output_url
from ...webhooks import finished_notifications
from ..access import can_see_job, hidden_job
from ..auth import Principal, current_principal, require_allowed, require_callback_host
from ..context import ApiContext, get_ctx
from ..errors import ApiError
from ..schemas import JobCreate, JobList
from ..thumbnails import DEFAULT_SIZE, THUMBNAIL_SIZES
from ..urls import check_callback_url, check_s3_url
from .common import (AUTH_ERRORS, NOT_FOUND, SUBMIT_ERRORS, IdempotencyKey, JobId, _error, counted_submission,
                     create_once,
                     known_query_only)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(known_query_only)])

STATE_SCAN_LIMIT = 20_000  # listing reads at most this many entries of an index (bounded work for a token that sees few)


def checked_request(body: JobCreate, principal: Principal, ctx: ApiContext) -> JobRequest:
    """URL syntax (422), then the allow-list (403) for the input and the output the job will really write."""
    check_s3_url(body.input_url, "input_url")
    if body.output_url is not None:
        check_s3_url(body.output_url, "output_url")
    if body.callback_url is not None:
        check_callback_url(body.callback_url, ctx.settings.callback_egress.allowed_networks)
        require_callback_host(principal, body.callback_url)
    options = body.options.to_job_options()
    output = body.output_url or derive_output_url(body.input_url, body.task, body.profile, options.output_format)
    require_allowed(principal, body.input_url, "input_url")
    require_allowed(principal, output, "output_url" if body.output_url else "derived output_url")
    if output == body.input_url:
        raise ApiError(422, "invalid_job", "output_url is the input itself; restoring in place would destroy it")
    return JobRequest(task=body.task, profile=body.profile, input_url=body.input_url, output_url=output,
                      options=options, callback_url=body.callback_url)


def visible_job(ctx: ApiContext, principal: Principal, job_id: str) -> Job:
    job = ctx.jobs.get(job_id)  # unknown or expired → JobNotFoundError → 404
    if not can_see_job(principal, job):
        raise hidden_job(job_id)
    return job


@router.post("", status_code=201, response_model=Job, responses=SUBMIT_ERRORS, summary="Submit one job",
             dependencies=[Depends(counted_submission)])
def submit_job(body: JobCreate, response: Response, idempotency_key: IdempotencyKey = None,
               principal: Principal = Depends(current_principal),
               ctx: ApiContext = Depends(get_ctx)) -> Job:
    """Checks the URLs against the token's allow-list, records the job and queues it for a worker."""
    job_request = checked_request(body, principal, ctx)

    created: list[Job] = []

    def create() -> str:
        job = ctx.submitter.submit(job_request, owner=principal.name)
        created.append(job)
        log.info("job submitted", extra={"job_id": job.id, "task": job.task.value, "owner": principal.name})
        return job.id

    job_id, replayed = create_once(ctx.idempotency, principal.name, idempotency_key, "job", body, create, response)
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    # A new job is what was just written (no read back: one Redis round trip less); a replay reads the original.
    return visible_job(ctx, principal, job_id) if replayed else created[0]


@router.get("", response_model=JobList, responses=AUTH_ERRORS, summary="Recent jobs visible to this token")
def list_jobs(limit: Annotated[int, Query(ge=1, le=200)] = 50,
              state: Annotated[JobState | None, Query(description="Only jobs in this state")] = None,
              principal: Principal = Depends(current_principal),
              ctx: ApiContext = Depends(get_ctx)) -> JobList:
    """Newest first (by creation; with `state`, by the time the job entered it). Reads this token's own jobs and
    the jobs created outside the API (CLI, backfills) from an index of each, kept for the record TTL
    (`IMGRESTORE_JOB_TTL_SECONDS`), so another token's jobs never hide them; up to 20 000 entries of each index.
    Jobs created before these indexes existed (an upgrade) are found by id, not listed."""
    found: dict[str, tuple[float, Job]] = {}

    def take(owner: str | None) -> None:
        """Adds the visible matches among ``owner``'s jobs, page by page, until ``limit`` came from them."""
        taken = 0
        with closing(ctx.jobs.owner_pages(owner, state, 200, STATE_SCAN_LIMIT)) as pages:
            for entries in pages:
                scores = dict(entries)
                for job in ctx.jobs.get_many(list(scores)):
                    if (state is None or job.state is state) and can_see_job(principal, job) \
                            and job.id not in found:
                        found[job.id] = (scores[job.id], job)
                        taken += 1
                        if taken >= limit:
                            return

    take(principal.name)
    take(None)
    newest = sorted(found.values(), key=lambda entry: entry[0], reverse=True)[:limit]
    return JobList(jobs=[job for _, job in newest])


@router.get("/{job_id}", response_model=Job, responses={**AUTH_ERRORS, **NOT_FOUND}, summary="One job")
def get_job(job_id: JobId, principal: Principal = Depends(current_principal),
            ctx: ApiContext = Depends(get_ctx)) -> Job:
    return visible_job(ctx, principal, job_id)


@router.delete("/{job_id}", response_model=Job,
               responses={**AUTH_ERRORS, **NOT_FOUND, 409: _error("The job is already running or finished")},
               summary="Cancel a queued job")
def cancel_job(job_id: JobId, principal: Principal = Depends(current_principal),
               ctx: ApiContext = Depends(get_ctx)) -> Job:
    """Fails a job no worker has started yet with the error `cancelled`; a running or finished job → 409."""
    visible_job(ctx, principal, job_id)
    if not ctx.jobs.cancel(job_id):  # atomic: only a job still queued
        current = ctx.jobs.get(job_id)
        raise ApiError(409, "not_cancellable", f"job {job_id} is {current.state.value}; only queued jobs can be "
                       "cancelled")
    job = ctx.jobs.get(job_id)
    log.info("job cancelled", extra={"job_id": job_id, "owner": principal.name})
    _notify_finished(ctx, job)
    return job


def _notify_finished(ctx: ApiContext, job: Job) -> None:
    """A cancelled job never reaches a worker's finish path, so its webhooks are queued from here (same task)."""
    for note in finished_notifications(ctx.jobs, ctx.batches, job):
        note.queue(ctx.celery, ctx.settings.control_queue)


class Which(str, Enum):
    input = "input"
    output = "output"


@router.get("/{job_id}/thumbnail/{which}", response_class=RawResponse,
            responses={**AUTH_ERRORS, **NOT_FOUND,
                       200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
                             "description": "A JPEG no larger than size×size"},
                       304: {"description": "Not modified (If-None-Match)"},
                       409: _error("The job has no output yet"),
                       502: _error("The object store refused the API's credentials")},
            summary="A small JPEG preview of the job's input or output")
def thumbnail(job_id: JobId, which: Which, request: Request,
              size: Annotated[int, Query(description="Fits size×size; one of "
                                         f"{', '.join(map(str, THUMBNAIL_SIZES))}",
                                         json_schema_extra={"enum": list(THUMBNAIL_SIZES)})] = DEFAULT_SIZE,
              principal: Principal = Depends(current_principal),
              ctx: ApiContext = Depends(get_ctx)) -> RawResponse:
    """Read through the object store, decoded under IMGRESTORE_MAX_PIXELS, cached by the object's ETag."""
    job = visible_job(ctx, principal, job_id)
    if which is Which.output and job.state is not JobState.succeeded:
        raise ApiError(409, "no_output", f"job {job_id} is {job.state.value}; it has an output once it succeeded")
    url = job.input_url if which is Which.input else output_preview_url(job)
    data, validator = ctx.thumbnails.thumbnail(url, size)
    etag = f'"{validator}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=60"}
    if request.headers.get("if-none-match") == etag:
        return RawResponse(status_code=304, headers=headers)
    return RawResponse(data, media_type="image/jpeg", headers=headers)
