"""``imgrestore api`` runs one uvicorn process: several uvicorn workers would each answer /metrics from their own
request registry, so counters scraped through one port would jump between processes. Scaling is by processes or
replicas behind a load balancer (README)."""

from __future__ import annotations

import uvicorn
from click.testing import CliRunner

from services.cli.common import cli


def test_imgrestore_api_offers_no_uvicorn_workers(monkeypatch):
    served: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: served.append(kwargs))
    result = CliRunner().invoke(cli, ["api", "--port", "0", "--workers", "2"])
    assert result.exit_code == 2 and "--workers" in result.output
    assert served == []  # refused before anything was served


def test_imgrestore_api_help_says_how_to_scale():
    result = CliRunner().invoke(cli, ["api", "--help"])
    assert result.exit_code == 0 and "load balancer" in result.output
