"""The ``imgrestore`` command: one module a verb."""

from __future__ import annotations

import click

from .common import cli  # verbs are imported when named (common.VerbGroup)


def main() -> None:
    cli(prog_name="imgrestore")


__all__ = ["cli", "main", "click"]
