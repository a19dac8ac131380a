"""``imgrestore watch``: a hot folder — restore every image that lands in a folder or under an S3 prefix."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import click
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from ..errors import ImgRestoreError
from ..hot_folders import JobQueue, LocalFolder, S3Prefix, WatchPlan, WatchRecord, WatchSettings, WatchState, \
    WatchStatus, Watcher
from ..imaging.codecs import normalize_format
from ..jobs import DEFAULT_INCLUDE, JobOptions, Profile, Task
from ..storage import StorageRouter, is_s3_url, local_path
from .common import (EXIT_FAILED, EXIT_USAGE, FORMAT_HELP, cli, color_option,
                     queue_clients, quiet_logging, reports_errors, settings)


def status_line(status: WatchStatus) -> str:
    parts = [f"watching ({status.mode})", f"seen {status.seen:,}", f"done {status.done:,}",
             f"failed {status.failed:,}"]
    if status.settling:
        parts.append(f"{status.settling:,} being written")
    if status.in_flight:
        parts.append(f"{status.in_flight:,} at the workers")
    if status.skipped:
        parts.append(f"{status.skipped:,} done earlier")
    parts.append(f"{status.rate:,.1f}/min")
    return " · ".join(parts)


@cli.command()
@click.option("--task", "-t", type=click.Choice([t.value for t in Task]), required=True)
@click.option("--profile", type=click.Choice([p.value for p in Profile]), default="auto", show_default=True)
@click.option("--output", "-o", required=True, help="Output folder or s3://bucket/prefix/.")
@click.option("--include", default=",".join(DEFAULT_INCLUDE), show_default=True,
              help="Comma-separated file-name patterns.")
@click.option("--format", "output_format", help=FORMAT_HELP)
@click.option("--jpeg-quality", type=click.IntRange(1, 100))
@color_option
@click.option("--queue", "queued", is_flag=True,
              help="Queue a job per input for the workers (they must see the same folder or bucket).")
@click.option("--max-in-flight", type=click.IntRange(1), default=100, show_default=True,
              help="With --queue: at most this many of this watch's jobs unfinished at once.")
@click.option("--move-done", help="Move each restored input here (folder or s3:// prefix), keeping its path.")
@click.option("--move-failed", help="Move each input that failed here.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
              help="JSONL file of failures, created at the first one (default: watch-<id>-failures.jsonl).")
@click.option("--state-file", type=click.Path(dir_okay=False, path_type=Path),
              help="What was done, for restarts (default: <output>/.imgrestore-<id>.jsonl; the current folder "
                   "for an s3:// output).")
@click.option("--settle", type=click.FloatRange(0, min_open=True),
              help="Seconds a local file must stay unchanged before it is taken (IMGRESTORE_WATCH_SETTLE_SECONDS).")
@click.option("--poll-interval", type=click.FloatRange(0, min_open=True),
              help="Seconds between S3 polls (IMGRESTORE_WATCH_POLL_INTERVAL).")
@click.option("--polling", is_flag=True, help="Poll the folder instead of using filesystem events.")
@click.option("--once", is_flag=True, help="Restore what is there now (once complete), then exit.")
@click.option("--verbose", "-v", is_flag=True)
@click.argument("source")
@reports_errors
def watch(task, profile, output, include, output_format, jpeg_quality, color, queued, max_in_flight, move_done,
          move_failed, report, state_file, settle, poll_interval, polling, once, verbose, source) -> None:
    """Restore every image that appears in SOURCE (a folder or s3://bucket/prefix/) into --output.

    Files already there are restored first. A local file is taken once it has stopped changing; temporary names
    (*.part, ~$*, dot-files) never are. Each input is restored once, also across restarts (the state file);
    a failed input is tried again only once it changes. Ctrl-C finishes the image in hand, then stops; nothing is
    left half-written. Exit status: 0 after a clean stop, 1 with --once when any input failed, 2 on a usage error.
    """
    quiet_logging(verbose)
    config = settings()
    overrides = {"settle_seconds": settle, "poll_interval": poll_interval, "force_polling": polling or None}
    watch_settings = WatchSettings(**{k: v for k, v in overrides.items() if v is not None})
    console = Console(stderr=True, soft_wrap=True)  # one line an event, whatever the width: greppable logs
    try:
        plan = WatchPlan.create(
            Task(task), source, output, profile=Profile(profile), queued=queued,
            options=JobOptions(output_format=normalize_format(output_format), jpeg_quality=jpeg_quality, color=color),
            include=tuple(p.strip() for p in include.split(",") if p.strip()))
        storage = StorageRouter(config)
        # Absolute move folders: the messages and the state file name them the same whatever the current folder.
        move_done, move_failed = (m if m is None or is_s3_url(m) else str(local_path(m).resolve())
                                  for m in (move_done, move_failed))
        moves = [m for m in (move_done, move_failed) if m]
        if is_s3_url(plan.source):
            source_ = S3Prefix(plan, watch_settings, storage, exclude=[plan.output, *moves])
        else:
            source_ = LocalFolder(plan, watch_settings, exclude=[local_path(u) for u in (plan.output, *moves)
                                                                 if not is_s3_url(u)])
        if queued:
            queue = queue_clients(config)
            queue.jobs.redis.ping()  # fail now, not at the first file
            runner = {"queue": JobQueue(queue.jobs, queue.submitter, max_in_flight)}
        else:
            from ..restorer import Restorer

            runner = {"restorer": Restorer(config, storage=storage)}
        report_path = report or Path(f"watch-{plan.watch_id}-failures.jsonl")
        state = WatchState(state_file or plan.default_state_file())
        watcher = Watcher(plan, source_, state, storage, move_done=move_done, move_failed=move_failed,
                          report=report_path, settings=watch_settings, **runner)
    except ImgRestoreError as exc:
        console.print(f"[red]error:[/red] {escape(exc.message)}")
        sys.exit(EXIT_USAGE)

    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        if stop.is_set():  # a second Ctrl-C: stop now (the write in progress is atomic; it is simply redone)
            raise KeyboardInterrupt
        stop.set()
        console.print("[yellow]stopping[/yellow] after the image in hand (Ctrl-C again to stop at once)")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    mode = ("queued for the workers" if queued else "in this process") + (
        ", filesystem events" if source_.mode == "events" else ", polling")
    console.print(f"watch {plan.watch_id}: {escape(plan.root)} → {escape(plan.output)} ({mode}); "
                  f"state {escape(str(state.path))}")

    with Live(Text(""), console=console, refresh_per_second=4, transient=True,
              redirect_stderr=False) as live:
        def on_event(kind: str, record: WatchRecord | None, status: WatchStatus) -> None:
            if record is not None:
                moved = f" (input moved to {record.moved_to})" if record.moved_to else ""
                if kind == "restored":
                    live.console.print(f"[green]restored[/green] {escape(record.input)} → "
                                       f"{escape(record.output)}{escape(moved)}")
                else:
                    error = f"{record.error.type}: {record.error.message}" if record.error else "?"
                    live.console.print(f"[red]failed[/red] {escape(record.input)}: {escape(error)}{escape(moved)}")
            live.update(Text(status_line(status)))

        try:
            status = watcher.run(stop, on_event, once=once)
        except KeyboardInterrupt:
            status = watcher.status
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    waiting = f"; {status.in_flight:,} jobs still at the workers (collected at the next start)" \
        if status.in_flight else ""
    console.print(
        f"watch {plan.watch_id}: seen {status.seen:,}, [green]{status.done:,} restored[/green], "
        f"[red]{status.failed:,} failed[/red] in {status.elapsed:,.1f} s ({status.skipped:,} done by "
        f"earlier runs){waiting}. Failures: {escape(str(report_path)) if watcher.failures else 'none'}")
    if once and status.failed:
        sys.exit(EXIT_FAILED)
