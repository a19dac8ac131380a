"""``imgrestore retry``: re-queue failed jobs (dead letters) once their cause is fixed, and orphans — jobs left
``running`` that nobody holds and no message will bring back."""

from __future__ import annotations

import click

from ..errors import JobNotFoundError
from ..jobs import JobState
from ..queue.recovery import OrphanSweeper
from .common import EXIT_USAGE, cli, echo_json, fail, queue_clients, reports_errors, settings


@cli.command()
@click.argument("job_ids", nargs=-1)
@click.option("--failed", "batch_id", help="Re-queue every failed job of this batch or backfill.")
@click.option("--dead-letters", is_flag=True, help="Re-queue every job in the dead-letter record.")
@reports_errors
def retry(job_ids: tuple[str, ...], batch_id: str | None, dead_letters: bool) -> None:
    """Re-queue failed jobs: JOB_ID..., --failed BATCH_ID, or --dead-letters. A running job is re-queued only when
    it is an orphan (no worker holds it and it has no message). Prints what was re-queued, what was not and why, and
    the ids whose records are gone (expired or unknown: skipped, and dropped from the dead letters)."""
    config = settings()
    queue = queue_clients(config)
    store, submitter = queue.jobs, queue.submitter
    sweeper = OrphanSweeper(config, store, submitter, name="cli-retry")
    targets = list(job_ids)
    if batch_id:
        targets += queue.batches.failed_ids(batch_id, limit=10**9)
    if dead_letters:
        targets += store.dead_letters(limit=10**9)
    if not (job_ids or batch_id or dead_letters):
        fail("nothing to retry: give job ids, --failed BATCH_ID or --dead-letters", EXIT_USAGE)
    # An empty dead-letter record or a batch without failures is good news, not a usage error: exit 0, nothing done.
    requeued, skipped, gone = [], [], []
    for job_id in dict.fromkeys(targets):  # each once, in order
        try:
            job = store.get(job_id)
        except JobNotFoundError:  # its record expired (IMGRESTORE_JOB_TTL_SECONDS) or was deleted: nothing to run
            gone.append(job_id)
            continue
        if not job.state.finished and sweeper.requeue_if_orphan(job_id):
            requeued.append(job_id)
            continue
        if job.state is not JobState.failed:
            reason = None if job.state.finished else "a worker holds it, or its message is queued or in flight"
            skipped.append({"id": job_id, "state": job.state.value} | ({"reason": reason} if reason else {}))
            continue
        submitter.requeue(job_id)
        requeued.append(job_id)
    if gone:
        store.forget_dead_letters(gone)
        count = f"{len(gone)} job{'s' if len(gone) != 1 else ''}"
        click.echo(f"note: {count} skipped: no record left (unknown id, or expired "
                   f"{config.job_ttl_seconds} s after it ended: IMGRESTORE_JOB_TTL_SECONDS); listed under \"gone\"",
                   err=True)
    echo_json({"requeued": requeued, "skipped": skipped, "gone": gone})
