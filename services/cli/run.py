"""``imgrestore run``: the embedded default — restore files or folders in this process, no Redis, no queue."""

from __future__ import annotations

import posixpath
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ..errors import ImgRestoreError, InvalidJobError
from ..imaging.codecs import normalize_format
from ..jobs import (TILE_SIZE_MAX, TILE_SIZE_MIN, Job, JobOptions, Profile, Task, in_restored_folder, is_input_name,
                    output_name)
from ..restorer import Restorer, attempt
from ..storage import StorageRouter, is_s3_url, local_path, location, split_s3_url
from .common import EXIT_FAILED, EXIT_USAGE, FORMAT_HELP, cli, color_option, echo_json, quiet_logging, settings


@dataclass(frozen=True)
class WorkItem:
    input_url: str
    relative: str  # path under the output folder

    def output_url(self, out_dir: str, output_format: str | None) -> str:
        return join_url(out_dir, output_name(self.relative, output_format))


def join_url(base: str, relative: str) -> str:
    if is_s3_url(base):
        return base.rstrip("/") + "/" + relative
    return str(local_path(base) / relative)


def expand_inputs(inputs: list[str], out_dir: str, storage: StorageRouter) -> list[WorkItem]:
    """Files as given; folders and S3 prefixes recursively (``INPUT_SUFFIXES`` only), keeping relative paths.
    A folder's own output folder and its ``restored/<variant>/`` folders (earlier default outputs) are skipped."""
    items: list[WorkItem] = []
    out_root = None if is_s3_url(out_dir) else local_path(out_dir).resolve()
    for given in inputs:
        if is_s3_url(given):
            items.extend(_expand_s3(given, storage))
            continue
        path = local_path(given)
        if path.is_file():
            items.append(WorkItem(str(path), path.name))
        elif path.is_dir():
            for info in storage.local.list(str(path)):
                file = Path(info.url)
                if out_root is not None and file.resolve().is_relative_to(out_root):
                    continue  # never feed our own outputs back in
                relative = file.relative_to(path).as_posix()
                if is_input_name(file.name) and not in_restored_folder(relative):
                    items.append(WorkItem(str(file), relative))
        else:
            raise InvalidJobError(f"{given}: no such file or folder")
    return items


def _expand_s3(url: str, storage: StorageRouter) -> list[WorkItem]:
    bucket, key = split_s3_url(url, prefix=True)
    if key and not key.endswith("/") and storage.s3.head(url) is not None:
        return [WorkItem(url, posixpath.basename(key))]
    prefix = key if not key or key.endswith("/") else key + "/"
    root = f"s3://{bucket}/{prefix}"
    found = [
        WorkItem(info.url, info.url[len(root):])
        for info in storage.s3.list(root)
        if is_input_name(info.url) and not in_restored_folder(info.url[len(root):])
    ]
    if not found:
        raise InvalidJobError(f"{url}: no such object, and no images under that prefix")
    return found


def check_collisions(items: list[WorkItem], out_dir: str, output_format: str | None) -> None:
    seen: dict[str, str] = {}
    inputs = {location(item.input_url) for item in items}
    for item in items:
        target = item.output_url(out_dir, output_format)
        if location(target) in inputs:
            same = location(target) == location(item.input_url)
            raise InvalidJobError(f"{item.input_url} would be written to {target}, "
                                  f"{'itself' if same else 'another input'}; restoring in place would destroy it: "
                                  "choose another output folder")
        if target in seen:
            raise InvalidJobError(
                f"{seen[target]} and {item.input_url} would both be written to {target}; "
                "run them separately or into different output folders"
            )
        seen[target] = item.input_url


@cli.command()
@click.option("--task", "-t", type=click.Choice([t.value for t in Task]), required=True)
@click.option("--profile", type=click.Choice([p.value for p in Profile]), default="auto", show_default=True,
              help="Denoise profile: document pages, photos, or guess per image.")
@click.option("--output", "-o", "out_dir", required=True, help="Output folder (or s3://bucket/prefix/).")
@click.option("--format", "output_format", help=FORMAT_HELP)
@click.option("--jpeg-quality", type=click.IntRange(1, 100))
@click.option("--tile-size", type=click.IntRange(TILE_SIZE_MIN, TILE_SIZE_MAX),
              help="Tile size override; memory grows with its square.")
@color_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--verbose", "-v", is_flag=True)
@click.argument("inputs", nargs=-1, required=True)
def run(task, profile, out_dir, output_format, jpeg_quality, tile_size, color, as_json, verbose, inputs) -> None:
    """Restore INPUTS (image files, folders, s3:// URLs or prefixes) into the output folder, in this process.

    Folders are walked recursively and each file keeps its path relative to the folder given.
    Exit status: 0 when every image was restored, 1 when any failed, 2 on a usage error.
    """
    quiet_logging(verbose)
    config = settings()
    console = Console(stderr=True)
    try:
        fmt = normalize_format(output_format)
        options = JobOptions(output_format=fmt, jpeg_quality=jpeg_quality, tile_size=tile_size, color=color)
        restorer = Restorer(config)
        items = expand_inputs(list(inputs), out_dir, restorer.storage)
        check_collisions(items, out_dir, fmt)
    except ImgRestoreError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        sys.exit(EXIT_USAGE)
    if not items:
        console.print("[red]error:[/red] no images found in the inputs given")
        sys.exit(EXIT_USAGE)

    results: list[dict] = []
    started = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[failed]} failed"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False, disable=as_json) as progress:
        bar = progress.add_task(f"{task}", total=len(items), failed=0)
        failed = 0
        for item in items:
            job = Job(task=Task(task), profile=Profile(profile), input_url=item.input_url,
                      output_url=item.output_url(out_dir, fmt), options=options)
            results.append(_restore_one(restorer, job))
            failed += results[-1]["state"] == "failed"
            progress.update(bar, advance=1, failed=failed)

    elapsed = time.perf_counter() - started
    _report(console, results, elapsed, as_json, out_dir)
    if any(r["state"] == "failed" for r in results):
        sys.exit(EXIT_FAILED)


def _restore_one(restorer: Restorer, job: Job) -> dict:
    record = {"input": job.input_url, "output": job.output_url}
    done = attempt(restorer, job)
    if done.error is not None:
        return record | {"state": "failed", "error": {"type": done.error.type, "message": done.error.message}}
    outcome = done.outcome
    return record | {
        "state": "succeeded",
        "provider": outcome.provider,
        "model": outcome.result.model,
        "megapixels": outcome.result.megapixels,
        "timings": outcome.timings.model_dump(),
    }


def _shown(out_dir: str) -> str:
    """The output folder as a path one can paste (absolute), or the s3:// prefix as given."""
    return out_dir if is_s3_url(out_dir) else str(local_path(out_dir).resolve())


def _report(console: Console, results: list[dict], elapsed: float, as_json: bool, out_dir: str) -> None:
    ok = [r for r in results if r["state"] == "succeeded"]
    bad = [r for r in results if r["state"] == "failed"]
    megapixels = sum(r["megapixels"] for r in ok)
    summary = {"succeeded": len(ok), "failed": len(bad), "seconds": round(elapsed, 3),
               "megapixels": round(megapixels, 3), "provider": ok[0]["provider"] if ok else None,
               "failures": [{"input": r["input"], **r["error"]} for r in bad], "results": results}
    if as_json:
        echo_json(summary)
        return
    console.print(
        f"[green]{len(ok)} restored[/green], [red]{len(bad)} failed[/red] in {elapsed:.1f} s "
        f"({megapixels:.2f} MP{', ' + summary['provider'] if ok else ''})"
        + (f"; outputs under {escape(_shown(out_dir))}" if ok else ""),
        soft_wrap=True,  # a long path stays one line, to copy or grep
    )
    if bad:
        table = Table("input", "reason", title="Failed", title_justify="left")
        for r in bad:
            table.add_row(r["input"], f"{r['error']['type']}: {r['error']['message']}")
        console.print(table)
