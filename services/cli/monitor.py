"""``imgrestore monitor``: a live terminal dashboard of workers, queues, throughput and recent failures."""

from __future__ import annotations

import functools
import time
from dataclasses import asdict

import click
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from ..monitoring import Monitor, Snapshot, throughput
from ..queue.celery_app import app
from .common import cli, echo_json, job_store, reports_errors, settings


def age(seconds: float) -> str:
    """``–`` for none, else the largest two units: ``42s``, ``3m 05s``, ``2h 10m``, ``3d 4h``."""
    if seconds <= 0:
        return "–"
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def render(snapshot: Snapshot, rate: float | None) -> Group:
    minutes = f"{snapshot.window_seconds / 60:g} min"
    queues = Table("queue", "waiting", "oldest waiting", "in flight", "longest running", f"done ({minutes})",
                   "jobs/s", "MP/s", title="Queues", title_justify="left", expand=True)
    for name, counts in snapshot.queues.items():
        done = snapshot.throughput.get(name)
        queues.add_row(name, f"{counts['waiting']:,}", age(counts["oldest_waiting_s"]), f"{counts['in_flight']:,}",
                       age(counts["oldest_running_s"]),
                       *((f"{done.succeeded:,} ✓ {done.failed:,} ✗", f"{done.jobs_per_s:,.2f}",
                          f"{done.megapixels_per_s:,.2f}") if done else ("", "", "")))
    workers = Table("worker", "running", "processed", title=f"Workers ({len(snapshot.workers)})",
                    title_justify="left", expand=True)
    for worker in snapshot.workers:
        workers.add_row(worker.name, str(worker.active), "–" if worker.processed is None else f"{worker.processed:,}")
    if not snapshot.workers:
        workers.add_row("[red]no worker answered[/red]", "", "")
    done = snapshot.finished
    # Between two refreshes when live; over the window (from the job store) for a single snapshot.
    over_window = sum(r.jobs_per_s for r in snapshot.throughput.values())
    megapixels = sum(r.megapixels_per_s for r in snapshot.throughput.values())
    rate_text = (f"{rate:,.2f} jobs/s now · " if rate is not None else "") + \
        f"{over_window:,.2f} jobs/s, {megapixels:,.2f} MP/s over the last {minutes}"
    recovered = snapshot.recovery
    totals = (f"finished: [green]{done.get('succeeded', 0):,} succeeded[/green], "
              f"[red]{done.get('failed', 0):,} failed[/red]\nthroughput: {rate_text}\n"
              f"recovered: {recovered.get('interrupted', 0):,} deliveries interrupted by a Redis outage, "
              f"{recovered.get('orphans_requeued', 0):,} orphans re-queued")
    failures = Table("job", "input", "reason", title="Recent failures", title_justify="left", expand=True)
    for job in snapshot.failures:
        reason = f"{job.error.type}: {job.error.message}" if job.error else "?"
        failures.add_row(job.id[:12], job.input_url, reason)
    return Group(Panel(totals, title="imgrestore"), queues, workers, failures)


@cli.command()
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print one snapshot and exit.")
@click.option("--json", "as_json", is_flag=True, help="With --once: print the snapshot as JSON.")
@click.option("--window", type=click.FloatRange(1), default=300.0, show_default=True,
              help="Seconds of finished jobs that throughput (jobs/s, MP/s per queue) is measured over.")
@click.option("--worker-timeout", type=click.FloatRange(0.05), default=1.0, show_default=True,
              help="Longest wait for workers' replies (it ends sooner once every known worker answered).")
@reports_errors
def monitor(interval: float, once: bool, as_json: bool, window: float, worker_timeout: float) -> None:
    """Live view of workers, queue depths, throughput and recent failures (Ctrl-C to leave)."""
    config = settings()
    watcher = Monitor(config, job_store(config), app)
    take = functools.partial(watcher.snapshot, worker_timeout=worker_timeout, window=window)
    if once:
        snapshot = take()
        if as_json:
            data = asdict(snapshot)
            data["failures"] = [job.model_dump(mode="json") for job in snapshot.failures]
            echo_json(data)
        else:
            Console().print(render(snapshot, None))
        return
    previous = take()
    with Live(render(previous, None), refresh_per_second=4, screen=False) as live:
        try:
            while True:
                time.sleep(interval)
                current = take()
                live.update(render(current, throughput(previous, current)))
                previous = current
        except KeyboardInterrupt:
            pass
