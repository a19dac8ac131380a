"""The ``imgrestore`` command: one module a verb."""

from __future__ import annotations

import click

from .common import cli
from . import api, backfill, models, monitor, retry, run, status, submit, watch, worker  # noqa: F401  (each registers its verb on `cli`)


def main() -> None:
    cli(prog_name="imgrestore")


__all__ = ["cli", "main", "click"]
