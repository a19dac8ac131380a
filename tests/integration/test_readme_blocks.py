"""Issue 13, item 1: every shell block of the README runs as written, in order, in one shell, as a newcomer pastes
them: the quick start, service mode (moto's S3 server, a worker), the HTTP API, backfills, watch and monitor.

Blocks the README marks (``readme-test: skip`` / ``skip-lines`` comments, see tests/support/readme_blocks.py) do not
run: installs, the test suite itself, live views and placeholders. The README's ports and Redis database are swapped
for free ports and the tests' own database, so the run collides with nothing else; nothing else is changed."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from tests.support.processes import REPO, free_port
from tests.support.readme_blocks import run_blocks, shell_blocks, substitute


def _newcomer_env(redis_url: str) -> dict[str, str]:
    """This environment less every IMGRESTORE_* and AWS_* setting (a newcomer has none), with this checkout's code
    and its virtual environment's commands (``imgrestore``) first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMGRESTORE_", "AWS_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(REPO),
        # Not in the README, for a shared test machine: no fixed metrics port, one ORT thread per process.
        IMGRESTORE_METRICS_PORT="0",
        IMGRESTORE_INTRA_OP_THREADS="1",
        IMGRESTORE_TEST_REDIS_URL=redis_url,
    )
    return env


def test_every_readme_shell_block_runs_as_written(redis_url, tmp_path):
    home = tmp_path / "clone"  # what a clone gives the blocks: the README and the sample pages
    home.mkdir()
    shutil.copy(REPO / "README.md", home / "README.md")
    shutil.copytree(REPO / "samples", home / "samples")
    s3_port, api_port = free_port(), free_port()
    blocks = substitute(shell_blocks((REPO / "README.md").read_text()), {
        "redis://127.0.0.1:6379/0": redis_url,
        "-p 9000": f"-p {s3_port}",
        "127.0.0.1:9000": f"127.0.0.1:{s3_port}",
        "--port 8000": f"--port {api_port}",
        "127.0.0.1:8000": f"127.0.0.1:{api_port}",
    })
    ran = [b for b in blocks if not b.skipped]
    assert any("imgrestore run" in b.text for b in ran) and any("imgrestore api" in b.text for b in ran)

    result = run_blocks(blocks, home, _newcomer_env(redis_url), timeout=540)
    print(result.output[-6000:])
    assert result.returncode == 0, (f"the README block at line {result.failed_block} failed:\n"
                                    f"{result.output[-6000:]}")
    assert "### README blocks all ran" in result.output
    # What the blocks promise, on disk: the quick start's pages, the watch's outputs and emptied inbox.
    assert sorted(p.name for p in (home / "restored").iterdir()) == ["dirty-page-1.png", "dirty-page-2.png"]
    assert sorted(p.name for p in (home / "clean").glob("*.png")) == ["dirty-page-1.png", "dirty-page-2.png"]
    assert not list((home / "inbox").glob("*.png"))
    print(f"README blocks: {len(ran)} of {len(blocks)} shell blocks ran "
          f"({sum(b.skipped for b in blocks)} marked skip)")
