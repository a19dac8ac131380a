"""`/v1/batches`: many inputs (queued now) or an S3 prefix (expanded by the workers), with counts and failures."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from ...errors import BatchNotFoundError
from ...jobs import DEFAULT_INCLUDE
from ...queue.batch_store import Batch
from ...queue.submission import output_for, prefix_root
from ...webhooks import batch_finished_notifications
from ..access import can_see_batch, hidden_batch
from ..auth import Principal, current_principal, require_allowed, require_callback_host
from ..context import ApiContext, get_ctx
from ..errors import ApiError
from ..schemas import BatchCancelled, BatchCreate, BatchList, BatchView, JobList
from ..urls import check_callback_url, check_s3_url
from .common import (AUTH_ERRORS, NOT_FOUND, SUBMIT_ERRORS, BatchId, IdempotencyKey, counted_submission,
                     create_once,
                     known_query_only)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/batches", tags=["batches"], dependencies=[Depends(known_query_only)])
FAILURES_SHOWN = 20
SCAN_LIMIT = 1_000  # batches.recent keeps this many


def _check(body: BatchCreate, principal: Principal, ctx: ApiContext) -> Batch:
    """Syntax (422), limits (422) and the allow-list (403) of every location the batch will read or write."""
    if body.callback_url is not None:
        check_callback_url(body.callback_url, ctx.settings.callback_egress.allowed_networks)
        require_callback_host(principal, body.callback_url)
    if body.output_prefix is not None:
        check_s3_url(body.output_prefix, "output_prefix", prefix=True)
    batch = Batch(task=body.task, profile=body.profile, options=body.options.to_job_options(),
                  output_prefix=body.output_prefix,
                  owner=principal.name, callback_url=body.callback_url)
    if body.prefix is not None:
        check_s3_url(body.prefix, "prefix", prefix=True)
        require_allowed(principal, prefix_root(body.prefix), "prefix")
        # Without an output prefix every output lands under restored/ inside the listed prefix.
        require_allowed(principal, body.output_prefix or prefix_root(body.prefix), "output_prefix")
        return batch

    inputs = body.inputs or []
    limit = ctx.settings.api_max_batch_inputs
    if len(inputs) > limit:
        raise ApiError(422, "too_many_inputs", f"{len(inputs)} inputs: at most {limit} a batch "
                       "(IMGRESTORE_API_MAX_BATCH_INPUTS); use a prefix batch for more")
    outputs: dict[str, str] = {}
    seen: set[str] = set()
    all_inputs = set(inputs)
    for index, url in enumerate(inputs):
        check_s3_url(url, f"inputs[{index}]")
        if url in seen:
            raise ApiError(422, "duplicate_input", f"inputs[{index}]: {url} is listed twice")
        seen.add(url)
        require_allowed(principal, url, f"inputs[{index}]")
        output = output_for(batch, url, None)
        require_allowed(principal, output, f"the output of inputs[{index}]")
        if output in all_inputs:  # /v1/jobs refuses the same: restoring over an input destroys it
            raise ApiError(422, "invalid_batch", f"inputs[{index}]: its output {output} is "
                           f"{'the input itself' if output == url else 'another input of this batch'}; restoring "
                           "over an input would destroy it: choose another output_prefix")
        if output in outputs:
            raise ApiError(422, "output_collision", f"{outputs[output]} and {url} would both be written to "
                           f"{output}; give them distinct file names or submit them in separate batches")
        outputs[output] = url
    return batch


def _view(ctx: ApiContext, batch: Batch, with_failures: bool = False) -> BatchView:
    failures = ctx.jobs.get_many(ctx.batches.failed_ids(batch.id, FAILURES_SHOWN)) if with_failures else None
    return BatchView.of(batch, ctx.batches.listing_error(batch.id), failures)


def visible_batch(ctx: ApiContext, principal: Principal, batch_id: str) -> Batch:
    try:
        batch = ctx.batches.get(batch_id)
    except BatchNotFoundError:
        raise hidden_batch(batch_id) from None
    if not can_see_batch(principal, batch):
        raise hidden_batch(batch_id)
    return batch


@router.post("", status_code=201, response_model=BatchView, responses=SUBMIT_ERRORS, summary="Submit a batch",
             dependencies=[Depends(counted_submission)])
def submit_batch(body: BatchCreate, response: Response, idempotency_key: IdempotencyKey = None,
                 principal: Principal = Depends(current_principal),
                 ctx: ApiContext = Depends(get_ctx)) -> BatchView:
    batch = _check(body, principal, ctx)

    def create() -> str:
        if body.prefix is not None:
            ctx.batch_submitter.submit_prefix(batch, body.prefix, body.include or DEFAULT_INCLUDE)
        else:
            ctx.batch_submitter.submit_inputs(batch, body.inputs or [])
        log.info("batch submitted", extra={"batch_id": batch.id, "task": batch.task.value, "owner": principal.name,
                                           "inputs": len(body.inputs or []), "prefix": body.prefix})
        return batch.id

    batch_id, _ = create_once(ctx.idempotency, principal.name, idempotency_key, "batch", body, create, response)
    response.headers["Location"] = f"/v1/batches/{batch_id}"
    return _view(ctx, visible_batch(ctx, principal, batch_id), with_failures=True)


@router.get("", response_model=BatchList, responses=AUTH_ERRORS, summary="Recent batches visible to this token")
def list_batches(limit: Annotated[int, Query(ge=1, le=100)] = 20,
                 principal: Principal = Depends(current_principal),
                 ctx: ApiContext = Depends(get_ctx)) -> BatchList:
    found: list[BatchView] = []
    for batch_id in ctx.batches.recent_ids(SCAN_LIMIT):
        try:
            batch = ctx.batches.get(batch_id)
        except BatchNotFoundError:
            continue
        if can_see_batch(principal, batch):
            found.append(_view(ctx, batch))
            if len(found) >= limit:
                break
    return BatchList(batches=found)


@router.get("/{batch_id}", response_model=BatchView, responses={**AUTH_ERRORS, **NOT_FOUND},
            summary="A batch: state, counts, progress and its first failures")
def get_batch(batch_id: BatchId, principal: Principal = Depends(current_principal),
              ctx: ApiContext = Depends(get_ctx)) -> BatchView:
    return _view(ctx, visible_batch(ctx, principal, batch_id), with_failures=True)


@router.get("/{batch_id}/jobs", response_model=JobList, responses={**AUTH_ERRORS, **NOT_FOUND},
            summary="The jobs of a batch, in submission order")
def batch_jobs(batch_id: BatchId, offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
               limit: Annotated[int, Query(ge=1, le=500)] = 100,
               principal: Principal = Depends(current_principal),
               ctx: ApiContext = Depends(get_ctx)) -> JobList:
    visible_batch(ctx, principal, batch_id)
    return JobList(jobs=ctx.jobs.get_many(ctx.batches.job_ids(batch_id, offset, offset + limit - 1)))


@router.delete("/{batch_id}", response_model=BatchCancelled, responses={**AUTH_ERRORS, **NOT_FOUND},
               summary="Cancel a batch: nothing more is queued, queued jobs are cancelled, running ones finish")
def cancel_batch(batch_id: BatchId, principal: Principal = Depends(current_principal),
                 ctx: ApiContext = Depends(get_ctx)) -> BatchCancelled:
    """Stops a background expansion (prefix or large inputs batch), fails its queued jobs with the error
    `cancelled` (as `DELETE /v1/jobs/{id}` does) and seals it; jobs already running finish. Cancelling again is
    harmless (0 more cancelled)."""
    visible_batch(ctx, principal, batch_id)
    cancelled, running = ctx.batch_submitter.cancel(batch_id)
    for note in batch_finished_notifications(ctx.batches, batch_id):  # the cancel may have finished it
        note.queue(ctx.celery, ctx.settings.control_queue)
    log.info("batch cancelled", extra={"batch_id": batch_id, "owner": principal.name, "cancelled": cancelled,
                                       "running": running})
    return BatchCancelled(batch=_view(ctx, ctx.batches.get(batch_id), with_failures=False),
                          cancelled=cancelled, running=running)
