"""``imgrestore backfill``: restore a whole prefix or folder, resumably, with progress and a failure report."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ..backfill import BackfillPlan, BackfillStatus, EmbeddedBackfill, QueuedBackfill, count_in_background, estimate
from ..errors import ImgRestoreError
from ..imaging.codecs import normalize_format
from ..jobs import DEFAULT_INCLUDE, JobOptions, Profile, Task
from ..queue.recovery import OrphanSweeper
from ..restorer import Restorer
from ..storage import StorageRouter, is_s3_url
from .common import (EXIT_FAILED, EXIT_USAGE, FORMAT_HELP, cli, color_option,
                     queue_clients, quiet_logging, reports_errors, settings)


def _describe(status: BackfillStatus) -> str:
    rate, total = status.rate, status.total
    of = f"{total:,}" if total is not None else f"{status.listed:,}+ (counting)"
    eta = f"{(total - status.done) / rate:,.0f}s" if total is not None and rate > 0 else "–"
    earlier = f" · {status.skipped:,} of them from an earlier run" if status.skipped else ""
    return f"{status.done:,}/{of} done · {status.failed:,} failed{earlier} · {rate:,.1f}/s · ETA {eta}"


def summary(backfill_id: str, status: BackfillStatus, report: Path | None) -> str:
    """One line whose numbers add up: succeeded + failed = inputs; the earlier run's share is a part of them."""
    before = status.listed - status.queued  # queued (service mode) or finished (embedded) by an earlier run
    earlier = f" ({before:,} of them handled by an earlier run)" if before > 0 else ""
    return (f"backfill {backfill_id}: {status.listed:,} inputs, [green]{status.succeeded:,} succeeded[/green], "
            f"[red]{status.failed:,} failed[/red]{earlier}"
            f"{f', {status.unsafe_keys:,} unsafe keys skipped' if status.unsafe_keys else ''}; "
            f"{status.elapsed:,.1f} s. "
            f"Failures: {report if report is not None else 'none'}")


@cli.command()
@click.option("--task", "-t", type=click.Choice([t.value for t in Task]), required=True)
@click.option("--profile", type=click.Choice([p.value for p in Profile]), default="auto", show_default=True)
@click.option("--output", "-o", required=True, help="Output prefix (s3://bucket/clean/) or folder.")
@click.option("--include", default=",".join(DEFAULT_INCLUDE), show_default=True,
              help="Comma-separated file-name patterns.")
@click.option("--max-in-flight", type=click.IntRange(1), default=500, show_default=True,
              help="Never more than this many jobs of this backfill queued or running.")
@click.option("--format", "output_format", help=FORMAT_HELP)
@click.option("--jpeg-quality", type=click.IntRange(1, 100))
@color_option
@click.option("--dry-run", is_flag=True, help="List what would be processed and estimate the work; change nothing.")
@click.option("--resume", is_flag=True, help="Continue the backfill of this same request after an interruption.")
@click.option("--embedded", is_flag=True, help="Process in this process even for s3:// sources (no Redis).")
@click.option("--detach", is_flag=True, help="Service mode: return once everything is queued.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
              help="JSONL file of failures (default: backfill-<id>-failures.jsonl).")
@click.option("--state-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Embedded mode: progress file for --resume (default: <output>/.imgrestore-<id>.jsonl).")
@click.argument("source")
@reports_errors
def backfill(task, profile, output, include, max_in_flight, output_format, jpeg_quality, color, dry_run, resume, embedded,
             detach, report, state_file, source) -> None:
    """Restore every image under SOURCE (s3://bucket/prefix/ or a folder) into --output.

    s3:// sources are queued for the workers (service mode); folders are processed in this process (embedded).
    Run the same command again with --resume to finish an interrupted backfill. Exit 1 when any input failed.
    """
    quiet_logging(False)
    config = settings()
    console = Console(stderr=True)
    plan = BackfillPlan(
        task=Task(task), profile=Profile(profile), source=source, output=output,
        options=JobOptions(output_format=normalize_format(output_format), jpeg_quality=jpeg_quality, color=color),
        include=tuple(p.strip() for p in include.split(",") if p.strip()),
    )
    storage = StorageRouter(config)

    if dry_run:
        found = estimate(plan, storage, lambda info, out: click.echo(f"{info.url}\t{out}"))
        console.print(f"backfill {plan.backfill_id}: {found.count:,} inputs, {found.bytes / 1e6:,.1f} MB, "
                      f"{found.megapixels:,.1f} MP" + (f" ({found.unreadable} unreadable headers)" if found.unreadable
                                                        else ""))
        return

    queued = is_s3_url(source) and not embedded
    if queued:
        queue = queue_clients(config)
        runner = QueuedBackfill(plan, queue.jobs, queue.batches, queue.batch_submitter, storage, max_in_flight,
                                sweeper=OrphanSweeper(config, queue.jobs, queue.submitter,
                                                      name=f"backfill-{plan.backfill_id}"),
                                sweep_interval=config.orphan_sweep_interval)
    else:
        out_dir = Path(output) if not is_s3_url(output) else Path.cwd()
        runner = EmbeddedBackfill(plan, Restorer(config, storage=storage),
                                  state_file or out_dir / f".imgrestore-{plan.backfill_id}.jsonl")

    mode = "queued for workers" if queued else "in this process"
    console.print(f"backfill {plan.backfill_id}: {plan.root} → {output} ({mode})")
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[line]}"),
                      TimeElapsedColumn(), console=console) as progress:
            bar = progress.add_task(task, total=None, line="listing…")
            count_in_background(plan, storage, runner.status)

            def show(status: BackfillStatus) -> None:
                progress.update(bar, completed=status.done, total=status.total, line=_describe(status))

            if queued:
                status = runner.run(resume, show, wait=not detach)
            else:
                status = runner.run(resume, show)
    except KeyboardInterrupt:
        console.print(f"\n[yellow]interrupted[/yellow]: run the same command with --resume to continue "
                      f"backfill {plan.backfill_id}")
        sys.exit(130)
    except ImgRestoreError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        sys.exit(EXIT_USAGE)

    if queued and detach:
        console.print(f"queued {status.queued:,} jobs ({status.skipped:,} were already queued); follow it with "
                      f"GET /v1/batches/{plan.backfill_id} or `imgrestore monitor`")
        return
    report_path = report or Path(f"backfill-{plan.backfill_id}-failures.jsonl")
    written = _write_report(report_path, runner.failures())
    console.print(summary(plan.backfill_id, status, report_path if written else None))
    if status.failed:
        sys.exit(EXIT_FAILED)


def _write_report(path: Path, failures: Iterable[dict]) -> int:
    """Writes the failures as JSON lines; the file is created at the first one, so nothing failed leaves none."""
    count = 0
    fh = None
    try:
        for record in failures:
            if fh is None:
                fh = path.open("w")
            fh.write(json.dumps(record) + "\n")
            count += 1
    finally:
        if fh is not None:
            fh.close()
    return count
