"""``imgrestore monitor``: a live terminal dashboard of workers, queues, throughput and recent failures."""

from __future__ import annotations

import time
from dataclasses import asdict

import click
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from ..celery_app import app
from ..monitoring import Monitor, Snapshot, throughput
from .common import cli, echo_json, job_store, reports_errors, settings


def render(snapshot: Snapshot, rate: float | None) -> Group:
    queues = Table("queue", "waiting", "in flight", title="Queues", title_justify="left", expand=True)
    for name, counts in snapshot.queues.items():
        queues.add_row(name, f"{counts['waiting']:,}", f"{counts['in_flight']:,}")
    workers = Table("worker", "running", "processed", title=f"Workers ({len(snapshot.workers)})",
                    title_justify="left", expand=True)
    for worker in snapshot.workers:
        workers.add_row(worker.name, str(worker.active), "–" if worker.processed is None else f"{worker.processed:,}")
    if not snapshot.workers:
        workers.add_row("[red]no worker answered[/red]", "", "")
    done = snapshot.finished
    rate_text = "–" if rate is None else f"{rate:,.2f} jobs/s"
    recovered = snapshot.recovery
    totals = (f"finished: [green]{done.get('succeeded', 0):,} succeeded[/green], "
              f"[red]{done.get('failed', 0):,} failed[/red] · throughput {rate_text}\n"
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
@reports_errors
def monitor(interval: float, once: bool, as_json: bool) -> None:
    """Live view of workers, queue depths, throughput and recent failures (Ctrl-C to leave)."""
    config = settings()
    watcher = Monitor(config, job_store(config), app)
    if once:
        snapshot = watcher.snapshot()
        if as_json:
            data = asdict(snapshot)
            data["failures"] = [job.model_dump(mode="json") for job in snapshot.failures]
            echo_json(data)
        else:
            Console().print(render(snapshot, None))
        return
    previous = watcher.snapshot()
    with Live(render(previous, None), refresh_per_second=4, screen=False) as live:
        try:
            while True:
                time.sleep(interval)
                current = watcher.snapshot()
                live.update(render(current, throughput(previous, current)))
                previous = current
        except KeyboardInterrupt:
            pass
