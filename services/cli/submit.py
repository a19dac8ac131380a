"""``imgrestore submit``: queue one job for the workers."""

from __future__ import annotations

import click

from ..jobs import JobOptions, JobRequest, JobState, Profile, Task
from ..storage import resolve_local_url
from .common import EXIT_FAILED, FORMAT_HELP, cli, color_option, print_job, queue_clients, reports_errors, settings


@cli.command()
@click.option("--task", "-t", type=click.Choice([t.value for t in Task]), required=True)
@click.option("--profile", type=click.Choice([p.value for p in Profile]), default="auto", show_default=True,
              help="Denoise profile.")
@click.option("--output", "output_url", help="Output URL; default: restored/<variant>/ next to the input.")
@click.option("--format", "output_format", help=FORMAT_HELP)
@click.option("--jpeg-quality", type=click.IntRange(1, 100))
@color_option
@click.option("--wait", is_flag=True, help="Block until the job finishes; print it; exit 1 if it failed.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up waiting after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the job as one JSON object instead of its id.")
@click.argument("input_url")
@reports_errors
def submit(task, profile, output_url, output_format, jpeg_quality, color, wait, timeout, as_json, input_url) -> None:
    """Queue INPUT_URL (s3://bucket/key or a path the workers can read) for restoration. A relative path is taken
    from the current folder and sent as an absolute file:// URL."""
    config = settings()
    submitter = queue_clients(config).submitter
    request = JobRequest(
        task=Task(task),
        profile=Profile(profile),
        input_url=resolve_local_url(input_url),  # relative paths mean this folder, not the worker's
        output_url=resolve_local_url(output_url) if output_url else None,
        options=JobOptions(output_format=output_format, jpeg_quality=jpeg_quality, color=color),
    )
    job = submitter.submit(request)
    if not wait:
        if as_json:
            click.echo(job.model_dump_json())
        else:
            click.echo(job.id)
        return
    job = submitter.wait(job.id, timeout=timeout)
    print_job(job)
    if job.state is not JobState.succeeded:
        raise SystemExit(EXIT_FAILED)
