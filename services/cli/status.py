"""``imgrestore status JOB_ID``: the job record as JSON."""

from __future__ import annotations

import click

from .common import cli, job_store, print_job, reports_errors, settings


@cli.command()
@click.argument("job_id")
@reports_errors
def status(job_id: str) -> None:
    """Print the job JOB_ID as JSON (exit 2 when there is no such job)."""
    print_job(job_store(settings()).get(job_id))
