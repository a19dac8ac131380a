"""``imgrestore api``: serve the submission HTTP API and the status page (uvicorn)."""

from __future__ import annotations

import logging

import click

from ..errors import ImgRestoreError
from ..logs import configure_logging
from .common import EXIT_USAGE, cli, fail, settings


@cli.command("api")
@click.option("--host", default=None, help="Address to bind (IMGRESTORE_API_HOST, default 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port (IMGRESTORE_API_PORT, default 8000).")
def api(host: str | None, port: int | None) -> None:
    """Serve the HTTP API (/v1/jobs, /v1/batches), /ui, /healthz, /readyz and /metrics.

    One process: to serve more, run several (one per port or container) behind a load balancer; the API keeps no
    state of its own (README, "Submit a job over HTTP")."""
    # No uvicorn --workers: each process counts its requests in a registry of its own, so /metrics answered by
    # whichever worker took the connection would make the counters jump between processes (false resets in
    # Prometheus). Separate processes are scraped separately and summed correctly.
    import uvicorn

    from ..api.auth import parse_tokens

    config = settings()
    configure_logging(config.log_level, config.log_format)
    logging.getLogger("uvicorn.error").addFilter(_drop_color)
    try:
        parse_tokens(config.api_tokens)  # refuse a malformed token setting before binding the port
    except ImgRestoreError as exc:
        fail(exc.message, EXIT_USAGE)
    uvicorn.run(
        "services.api.app:create_app_from_env",
        factory=True,
        host=host or config.api_host,
        port=config.api_port if port is None else port,
        log_config=None,  # keep our structured logging
        access_log=False,  # the API logs each request itself, with the route template and never a header
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )


def _drop_color(record: logging.LogRecord) -> bool:
    """uvicorn adds an ANSI-coloured copy of some messages as an extra field; structured logs want it gone."""
    record.__dict__.pop("color_message", None)
    return True
