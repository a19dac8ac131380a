"""``imgrestore worker``: a Celery worker serving the restore queues."""

from __future__ import annotations

import os
import socket

import click

from ..jobs import Task
from .common import cli, settings


@cli.command()
@click.option("--queues", "-Q", default=",".join(t.value for t in Task), show_default=True,
              help="Comma-separated tasks whose queues this worker serves (e.g. denoise,colorize).")
@click.option("--concurrency", "-c", type=int, default=None, help="Worker processes (IMGRESTORE_WORKER_CONCURRENCY).")
@click.option("--name", "-n", default=None, help="Node name; default imgrestore-<pid>@<host>.")
@click.option("--loglevel", "-l", default=None, help="Log level (IMGRESTORE_LOG_LEVEL).")
@click.option("--pool", default="prefork", show_default=True, type=click.Choice(["prefork", "solo", "threads"]))
def worker(queues: str, concurrency: int | None, name: str | None, loglevel: str | None, pool: str) -> None:
    """Start a Celery worker (same as `celery -A services.worker worker` with our defaults)."""
    from ..worker import app  # registers the task and the lease-renewal step

    config = settings()
    names = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = [q for q in names if q not in {t.value for t in Task}]
    if unknown:
        raise click.BadParameter(f"unknown task queue(s): {', '.join(unknown)}", param_hint="--queues")
    argv = [
        "worker",
        f"--queues={','.join([config.queue_for(q) for q in names] + [config.control_queue])}",
        f"--concurrency={concurrency or config.worker_concurrency}",
        f"--hostname={name or f'imgrestore-{os.getpid()}@{socket.gethostname()}'}",
        f"--loglevel={(loglevel or config.log_level).upper()}",
        f"--pool={pool}",
        "--without-gossip",
        "--without-mingle",
    ]
    app.worker_main(argv)
