"""Issue 13, first hour: backfill progress and summary wording, the worker banner (no services needed)."""

from __future__ import annotations

import time

from services.backfill import BackfillPlan, BackfillStatus, count_in_background
from services.cli.backfill import _describe, summary
from services.config import Settings
from services.jobs import Task
from services.queue.celery_app import create_app
from services.storage import StorageRouter


def test_progress_shows_the_total_once_counted_while_the_listing_is_throttled():
    status = BackfillStatus("bf-x", listed=4, succeeded=4, started=time.monotonic() - 2)
    assert "4/4+ (counting) done" in _describe(status) and "ETA –" in _describe(status)
    status.expected = 7  # the separate count finished; the listing still waits for capacity
    line = _describe(status)
    assert line.startswith("4/7 done") and "ETA –" not in line, line  # before: "4/7+" and "ETA –"


def test_the_inputs_are_counted_apart_from_the_listing(tmp_path, settings):
    for name in ("a.png", "b.jpg", "sub/c.tif", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    plan = BackfillPlan(task=Task.denoise, source=str(tmp_path), output=str(tmp_path / "out"))
    status = BackfillStatus(plan.backfill_id)
    count_in_background(plan, StorageRouter(settings), status).join(10)
    assert status.expected == 3


def test_the_summary_adds_up():
    # A resumed backfill of 30 inputs, 13 of which the first run had queued (issue: "30 succeeded, 0 failed,
    # 13 skipped" read as 43 items).
    status = BackfillStatus("bf-x", listed=30, queued=17, skipped=13, succeeded=30, listing_done=True)
    line = summary("bf-x", status, None)
    assert "30 inputs, [green]30 succeeded[/green], [red]0 failed[/red] (13 of them handled by an earlier run)" in line
    assert "skipped" not in line and line.endswith("Failures: none")


def test_the_worker_banner_shows_each_queue_bound_to_its_own_name():
    banner = create_app(Settings(queue_prefix="zz.")).amqp.queues.format()  # what `celery worker` prints
    lines = sorted(banner.splitlines())
    assert len(lines) == 4, banner
    for line in lines:
        name = line.split()[1]
        assert f"exchange={name}(direct) key={name}" in line, banner  # before: exchange=zz.denoise for all
