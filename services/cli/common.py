"""What every verb shares: the click group, settings, Redis-backed services and error reporting.

Start-up time matters (``imgrestore run`` on one page): verbs are imported only when asked for, and what only queued
verbs need (Redis, Celery, the job store) is imported inside the functions that build it.
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, get_args

import click

from ..config import DocumentColourName, Settings, get_settings
from ..errors import ImgRestoreError
from ..logs import configure_logging, redact

if TYPE_CHECKING:
    from ..jobs import Job
    from ..queue import clients
    from ..queue.job_store import JobStore

EXIT_FAILED = 1  # the work ran and something failed (a job, a file)
EXIT_USAGE = 2  # the request itself was wrong (bad URL, unknown id, unreachable service)

# --format's help, shared by every verb that takes it.
FORMAT_HELP = ("png, jpeg, tiff, webp or bmp (default: each input's format). Documents (PDF, multi-page TIFF): pdf, "
               "tiff, or a folder (S3: a prefix) of page images png-pages, jpeg-pages, tiff-pages "
               "(name/page-0001.png…); a single-image format only for one-page documents.")


class VerbGroup(click.Group):
    """A group whose verbs live in ``services.cli.<verb>`` and are imported when named (each module registers its
    verb on ``cli`` as it is imported): ``run`` on a local file never loads Celery, boto3, FastAPI or the Redis
    client, which only other verbs use. ``--help`` lists (and so imports) them all."""

    VERBS = ("api", "backfill", "models", "monitor", "retry", "run", "status", "submit", "watch", "worker")

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.VERBS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.VERBS:
            importlib.import_module(f"{__package__}.{cmd_name}")
        return super().get_command(ctx, cmd_name)


@click.group(cls=VerbGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="imgrestore")
def cli() -> None:
    """imgrestore: batch image restoration with ONNX autoencoders."""


color_option = click.option(
    "--color", type=click.Choice(get_args(DocumentColourName)),
    help="Colour pages through the gray document model: auto (the default, IMGRESTORE_DOCUMENT_COLOR) keeps colour "
         "when a page has meaningful colour (stamps, coloured ink, highlighter) and writes other pages gray; keep "
         "always keeps it; gray always drops it.")


def settings() -> Settings:
    return get_settings()


def job_store(config: Settings) -> JobStore:
    from ..queue import clients

    return clients.job_store(config)


def queue_clients(config: Settings) -> clients.QueueClients:
    """The stores and submitters of a verb that queues, with the CLI's Celery app (made on first use: ``run`` and
    embedded verbs never build one)."""
    from ..queue import clients
    from ..queue.celery_app import app

    return clients.QueueClients.from_settings(config, app=app, jobs=job_store(config))


def print_job(job: Job) -> None:
    click.echo(job.model_dump_json(indent=2))


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def fail(message: str, code: int = EXIT_USAGE) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def reports_errors(func: Callable) -> Callable:
    """Turns our exceptions and an unreachable Redis into one readable line and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import redis  # the verbs wrapped here all talk to Redis: no start-up cost for the others

        try:
            return func(*args, **kwargs)
        except ImgRestoreError as exc:
            fail(exc.message)
        except redis.exceptions.ConnectionError as exc:
            fail(f"cannot reach Redis at {redact(get_settings().redis_url)} (IMGRESTORE_REDIS_URL): {exc}")

    return wrapper


def quiet_logging(verbose: bool) -> None:
    config = get_settings()
    configure_logging("DEBUG" if verbose else "WARNING", "text" if config.log_format == "text" else config.log_format)
