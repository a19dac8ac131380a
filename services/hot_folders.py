"""Hot folders: ``imgrestore watch`` restores every image that lands in a folder or under an S3 prefix.

- ``LocalFolder`` learns of new files from filesystem events (``watchfiles``; polling where events are unavailable,
  e.g. some network mounts) and rescans now and then as a safety net. A file is taken only once it is complete:
  its size and modification time unchanged for ``settle_seconds``; temporary names (``.part``, ``~$…``, dot-files)
  are never taken.
- ``S3Prefix`` polls the prefix page by page from a cursor (the last key seen), so a poll lists only keys added
  after it; a full relist every ``rescan_interval`` catches keys that sort before the cursor. S3 objects appear
  whole, so nothing has to settle.
- Each input is restored once, also across restarts: finished inputs are appended to a JSONL state file (as
  embedded backfills do), keyed by URL and fingerprint (size + mtime or ETag), so a file that comes back with other
  content under the same name is restored again.
- Embedded (``restorer.attempt`` in this process, the path ``run`` and embedded backfills take) or queued
  (``--queue``: one job per input for the workers, its id derived from the watch, the input and its fingerprint,
  so a restart never queues an input twice).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from glob import escape as glob_escape
from pathlib import Path
from typing import ClassVar, Literal, Protocol

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .backfill import PrefixPlan
from .errors import ConfigurationError, InvalidJobError
from .jobs import Job, JobError, JobState, Task, in_restored_folder
from .queue.job_store import JobStore
from .queue.submission import output_for, prefix_root
from .restorer import Restorer, attempt
from .storage import ObjectInfo, StorageRouter, is_s3_url, local_path, matches_any, split_s3_url

log = logging.getLogger(__name__)

TEMPORARY_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download", ".filepart")
_NAMESPACE = uuid.UUID("0d7f3c52-8f0e-4b7e-9a39-6b1f4f0c9e21")


class WatchSettings(BaseSettings):
    """``IMGRESTORE_WATCH_*`` settings (README, Configuration); the CLI options override them."""

    model_config = SettingsConfigDict(env_prefix="IMGRESTORE_WATCH_", extra="ignore")

    settle_seconds: float = Field(2.0, gt=0, description="A local file is taken once unchanged for this long.")
    poll_interval: float = Field(1.0, gt=0, description="Seconds between S3 polls, and between checks of "
                                 "unsettled files (the whole folder too, when polling).")
    rescan_interval: float = Field(60.0, gt=0, description="Full rescan of a watched folder (events can be "
                                   "missed) or full relist of a prefix (keys can sort before the cursor).")
    s3_page_size: int = Field(1000, ge=1, le=1000, description="Keys per S3 list request.")
    force_polling: bool = Field(False, description="Poll the folder instead of using filesystem events.")


def is_temporary(name: str) -> bool:
    """Names that scanners, sync tools and office suites use while a file is still being written."""
    return name.startswith((".", "~$")) or name.lower().endswith(TEMPORARY_SUFFIXES)


@dataclass(frozen=True)
class WatchPlan(PrefixPlan):
    queued: bool = False

    ID_PREFIX: ClassVar[str] = "wt"
    KIND: ClassVar[str] = "watch"

    @classmethod
    def create(cls, task: Task, source: str, output: str, **fields) -> "WatchPlan":
        """Local paths are made absolute, so the same folder always gives the same watch id and output names."""
        def canonical(url: str) -> str:
            return url if is_s3_url(url) else str(local_path(url).resolve())

        return cls(task=task, source=canonical(source), output=canonical(output), **fields)

    @property
    def watch_id(self) -> str:
        """The same id gives the same state file: a restart continues."""
        return self.plan_id

    def output_url(self, input_url: str) -> str:
        return output_for(self.batch(), input_url, self.root)

    def default_state_file(self) -> Path:
        """Beside the output (a local output folder), else in the current folder."""
        folder = Path.cwd() if is_s3_url(self.output) else Path(self.output)
        return folder / f".imgrestore-{self.watch_id}.jsonl"


def fingerprint(info: ObjectInfo) -> str:
    return f"{info.size}:{info.etag or ''}"


# --- sources -----------------------------------------------------------------------------------------------------
class Source(Protocol):
    def ready(self) -> Iterable[ObjectInfo]: ...  # inputs complete and ready to take, in a stable order

    def wait(self, seconds: float) -> None: ...  # until something may have changed, or ``seconds`` passed

    def close(self) -> None: ...

    @property
    def settling(self) -> int: ...  # files seen but not yet complete

    @property
    def listed(self) -> bool: ...  # a full scan or listing has happened (``--once`` needs one)


class LocalFolder:
    """A folder watched through filesystem events, or polled; files are taken once they stop changing."""

    def __init__(self, plan: WatchPlan, settings: WatchSettings, exclude: list[Path]) -> None:
        self.root = Path(plan.source)
        if not self.root.is_dir():
            raise InvalidJobError(f"{self.root}: no such folder to watch")
        self.include = list(plan.include)
        self.settings = settings
        self.exclude = [p.resolve() for p in exclude]
        self._unsettled: dict[Path, tuple[int, int, float]] = {}  # path → size, mtime_ns, unchanged since
        self._changed: set[Path] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last_scan = float("-inf")
        self.mode: Literal["events", "polling"] = "polling"
        self._thread: threading.Thread | None = None
        if not settings.force_polling:
            self._start_events()

    def _start_events(self) -> None:
        try:
            # Only a probe (the events thread imports it for use): a real import, unlike find_spec, also catches an
            # install whose compiled part does not load, so the folder falls back to polling at once.
            importlib.import_module("watchfiles")
        except ImportError:
            log.warning("watchfiles is not installed: polling the folder", extra={"folder": str(self.root)})
            return
        started = threading.Event()
        self._thread = threading.Thread(target=self._events, args=(started,), name="watch-events", daemon=True)
        self._thread.start()
        started.wait(5)
        self.mode = "events" if self._thread.is_alive() else "polling"

    def _events(self, started: threading.Event) -> None:
        import watchfiles

        try:
            # rust_timeout: the thread looks at the stop flag this often; debounce batches a burst into one wake.
            for changes in watchfiles.watch(self.root, stop_event=self._stop, yield_on_timeout=True,
                                            rust_timeout=500, debounce=200, step=50, raise_interrupt=False):
                started.set()
                if changes:
                    with self._lock:
                        self._changed.update(Path(path) for _, path in changes)
                    self._wake.set()
        except Exception as exc:  # inotify limits, unsupported mounts: polling still finds everything
            log.warning("filesystem events unavailable, polling instead",
                        extra={"folder": str(self.root), "error": f"{type(exc).__name__}: {exc}"})
            self.mode = "polling"
            self._wake.set()
        finally:
            started.set()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    @property
    def settling(self) -> int:
        return len(self._unsettled)

    @property
    def listed(self) -> bool:
        return self._last_scan != float("-inf")

    def wait(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def _wanted(self, path: Path) -> bool:
        if is_temporary(path.name) or not matches_any(path.name, self.include):
            return False
        relative = path.relative_to(self.root)
        if any(part.startswith(".") for part in relative.parts[:-1]) or in_restored_folder(relative.as_posix()):
            return False
        resolved = path.resolve()
        return not any(resolved.is_relative_to(ex) for ex in self.exclude)

    def _walk(self) -> Iterator[Path]:
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                yield Path(dirpath) / name

    def ready(self) -> list[ObjectInfo]:
        now = time.monotonic()
        interval = self.settings.poll_interval if self.mode == "polling" else self.settings.rescan_interval
        with self._lock:
            candidates = set(self._changed)
            self._changed.clear()
        if now - self._last_scan >= interval:
            self._last_scan = now
            candidates.update(self._walk())
        candidates.update(self._unsettled)
        found: list[ObjectInfo] = []
        for path in sorted(candidates):
            try:
                if not path.is_relative_to(self.root) or not self._wanted(path):
                    continue
                stat = path.stat()
            except (FileNotFoundError, NotADirectoryError):
                self._unsettled.pop(path, None)  # gone (moved away, or a temp name renamed)
                continue
            if not path.is_file():
                continue
            seen = self._unsettled.get(path)
            if seen is None or seen[:2] != (stat.st_size, stat.st_mtime_ns):
                self._unsettled[path] = (stat.st_size, stat.st_mtime_ns, now)
                continue
            if now - seen[2] >= self.settings.settle_seconds:
                del self._unsettled[path]
                found.append(ObjectInfo(str(path), stat.st_size, str(stat.st_mtime_ns)))
        return found


class S3Prefix:
    """An S3 prefix polled page by page from a cursor; a full relist every ``rescan_interval``."""

    def __init__(self, plan: WatchPlan, settings: WatchSettings, storage: StorageRouter,
                 exclude: list[str]) -> None:
        self.bucket, self.prefix = split_s3_url(plan.root, prefix=True)
        self.include = list(plan.include)
        self.settings = settings
        self.client = storage.s3.client
        self.exclude = [prefix_root(e) for e in exclude]
        self.cursor: str | None = None  # the last key listed
        self._last_full = float("-inf")
        self._next_poll = float("-inf")
        self.mode = "polling"
        self.settling = 0
        self._full_done = False

    def close(self) -> None:
        pass

    @property
    def listed(self) -> bool:
        return self._full_done


    def wait(self, seconds: float) -> None:
        time.sleep(max(0.0, min(seconds, self._next_poll - time.monotonic())))

    def pages(self) -> Iterator[list[ObjectInfo]]:
        """One list request a page: memory stays flat however many keys the prefix holds."""
        now = time.monotonic()
        full = now - self._last_full >= self.settings.rescan_interval
        if full:
            self._last_full, self.cursor = now, None
        from .storage import _classified

        token = None
        while True:
            kwargs = {"Bucket": self.bucket, "Prefix": self.prefix, "MaxKeys": self.settings.s3_page_size}
            if token:
                kwargs["ContinuationToken"] = token
            elif self.cursor:
                kwargs["StartAfter"] = self.cursor
            with _classified(f"s3://{self.bucket}/{self.prefix}"):
                page = self.client.list_objects_v2(**kwargs)
            infos = []
            for item in page.get("Contents", ()):
                key = item["Key"]
                self.cursor = key
                url = f"s3://{self.bucket}/{key}"
                name = key.rsplit("/", 1)[-1]
                relative = key[len(self.prefix):]
                if (is_temporary(name) or not matches_any(name, self.include)
                        or any(part.startswith(".") for part in relative.split("/")[:-1])
                        or in_restored_folder(relative)
                        or any(url.startswith(ex) for ex in self.exclude)):
                    continue
                infos.append(ObjectInfo(url, int(item["Size"]), item["ETag"].strip('"')))
            yield infos
            if not page.get("IsTruncated"):
                break
            token = page.get("NextContinuationToken")
        self._full_done = self._full_done or full
        self._next_poll = time.monotonic() + self.settings.poll_interval

    def ready(self) -> Iterator[ObjectInfo]:
        """Page by page, as listed: a relist of a large prefix never holds more than a page."""
        if time.monotonic() < self._next_poll:
            return
        for page in self.pages():
            yield from page


# --- state -------------------------------------------------------------------------------------------------------
class WatchRecord(BaseModel):
    """One line of the state file: an input taken, and (once finished) how it ended."""

    input: str
    output: str
    fingerprint: str
    state: Literal["started", "queued", "succeeded", "failed"]

    @property
    def finished(self) -> bool:
        return self.state in ("succeeded", "failed")
    job_id: str | None = None
    error: JobError | None = None
    seconds: float | None = None
    moved_to: str | None = None
    at: float = Field(default_factory=time.time)


class WatchState:
    """Append-only JSON lines beside the output; the last record of an input wins. Compacted at each start."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, WatchRecord] = {}
        self._fh = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    record = WatchRecord.model_validate_json(line)
                except ValueError:
                    continue  # a line cut short by a kill: that input is simply taken again
                self.records[record.input] = record
            self._compact()
        self._fh = self.path.open("a")

    def _compact(self) -> None:
        """One line an input; written beside and renamed, so a kill here leaves the old file whole."""
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".part")
        with os.fdopen(fd, "w") as fh:
            for record in self.records.values():
                fh.write(record.model_dump_json() + "\n")
        os.replace(tmp, self.path)

    def interrupted(self) -> list[WatchRecord]:
        """Inputs an earlier run was restoring when it was killed."""
        return [r for r in self.records.values() if r.state == "started"]

    def get(self, url: str, print_: str) -> WatchRecord | None:
        record = self.records.get(url)
        return record if record is not None and record.fingerprint == print_ else None

    def add(self, record: WatchRecord) -> None:
        self.records[record.input] = record
        # One write a line: a kill leaves at most a cut-short last line, which ``open`` skips.
        self._fh.write(record.model_dump_json() + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


# --- running -----------------------------------------------------------------------------------------------------
@dataclass
class WatchStatus:
    watch_id: str
    mode: str = "polling"
    seen: int = 0  # complete inputs found that this run took or had already finished
    done: int = 0  # restored by this run
    failed: int = 0
    skipped: int = 0  # finished by an earlier run
    in_flight: int = 0  # queued for the workers, not finished
    settling: int = 0  # seen but still being written
    started: float = field(default_factory=time.monotonic)
    _finished_at: deque = field(default_factory=lambda: deque(maxlen=10_000))

    def finished_one(self) -> None:
        self._finished_at.append(time.monotonic())

    @property
    def rate(self) -> float:
        """Inputs finished per minute over the last minute (or since the start, when shorter)."""
        now = time.monotonic()
        window = min(60.0, max(now - self.started, 1e-6))
        return sum(1 for t in self._finished_at if now - t <= window) * 60.0 / window

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


Event = Callable[[str, WatchRecord | None, WatchStatus], None]  # "restored" / "failed" / "tick", record, status


class Mover:
    """``--move-done`` / ``--move-failed``: the input leaves the watched folder, keeping its relative path."""

    def __init__(self, plan: WatchPlan, storage: StorageRouter) -> None:
        self.root = plan.root
        self.storage = storage

    def move(self, url: str, destination: str) -> str:
        relative = url[len(self.root):] if url.startswith(self.root) else url.rsplit("/", 1)[-1]
        if is_s3_url(url):
            target = prefix_root(destination) + relative
            src_bucket, src_key = split_s3_url(url)
            bucket, key = split_s3_url(target)
            client = self.storage.s3.client
            from .storage import _classified

            with _classified(url):  # a copy first: a kill between the two leaves the input, never loses it
                client.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": src_bucket, "Key": src_key})
                client.delete_object(Bucket=src_bucket, Key=src_key)
            return target
        source = Path(url)
        target = _free_name(Path(destination) / relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(source, target)  # same filesystem: atomic
        except OSError:
            # Another filesystem: copy beside the target under a temporary name, then rename, so the target
            # is never half there; the input is removed only once the copy is whole.
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
            os.close(fd)
            try:
                shutil.copy2(source, tmp)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            source.unlink()
        return str(target)


def remove_partial_writes(output_url: str) -> None:
    """The temporary files of a local write that was killed (``LocalStorage.write``: ``.<name>.<random>.part``
    beside the output). S3 needs nothing: an interrupted upload never becomes an object."""
    if is_s3_url(output_url):
        return
    path = local_path(output_url)
    for leftover in path.parent.glob(f".{glob_escape(path.name)}.*.part"):
        leftover.unlink(missing_ok=True)
        log.info("removed a partial write of an interrupted run", extra={"path": str(leftover)})


def _free_name(path: Path) -> Path:
    """Never overwrite an earlier page of the same name (scanners reuse names): ``p1.png`` → ``p1-2.png``."""
    if not path.exists():
        return path
    for n in range(2, 1_000_000):
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise InvalidJobError(f"{path}: too many files of that name in the move folder")


class Watcher:
    """Takes complete inputs from a source, restores (or queues) each once, records, reports and moves them."""

    def __init__(self, plan: WatchPlan, source: Source, state: WatchState, storage: StorageRouter,
                 restorer: Restorer | None = None, queue: "JobQueue | None" = None,
                 move_done: str | None = None, move_failed: str | None = None,
                 report: Path | None = None, settings: WatchSettings | None = None) -> None:
        if (restorer is None) == (queue is None):
            raise ConfigurationError("a watch runs either embedded (a restorer) or queued (a job queue)")
        self.plan = plan
        self.source = source
        self.state = state
        self.restorer = restorer
        self.queue = queue
        self.move_done = move_done
        self.move_failed = move_failed
        self.mover = Mover(plan, storage)
        self.report = report
        self.settings = settings or WatchSettings()
        self.status = WatchStatus(plan.watch_id, mode=getattr(source, "mode", "polling"))
        self.failures = 0
        self._pending: dict[str, WatchRecord] = {}  # queued for the workers: input → its "queued" record

    def run(self, stop: threading.Event, on_event: Event, once: bool = False) -> WatchStatus:
        """Until ``stop`` is set (Ctrl-C), or with ``once`` until what is there now is finished."""
        self.state.open()
        self.status.skipped = sum(1 for r in self.state.records.values() if r.finished)
        for record in self.state.interrupted():
            remove_partial_writes(record.output)
        if self.queue is not None:  # jobs queued by an earlier run: collect them
            for record in self.state.records.values():
                if record.state == "queued":
                    self._pending[record.input] = record
        try:
            while not stop.is_set():
                for info in self.source.ready():
                    if stop.is_set():
                        break
                    self._take(info, on_event)
                    if self.queue is not None:
                        self._collect(on_event, block=False)
                self._collect(on_event, block=False)
                self.status.settling = self.source.settling
                self.status.in_flight = len(self._pending)
                self.status.mode = getattr(self.source, "mode", self.status.mode)
                on_event("tick", None, self.status)
                if once and self.source.listed and not self.status.settling and not self._pending:
                    break
                self.source.wait(self.settings.poll_interval if not self._pending else min(
                    self.settings.poll_interval, 0.5))
        finally:
            self.source.close()
            self.state.close()
        return self.status

    def _take(self, info: ObjectInfo, on_event: Event) -> None:
        print_ = fingerprint(info)
        earlier = self.state.get(info.url, print_)
        if earlier is not None and earlier.finished:
            if earlier.moved_to is None and (self.move_done or self.move_failed):
                self._finish(earlier, on_event, counted=False)  # a restart between restoring and moving
            return
        if info.url in self._pending and self._pending[info.url].fingerprint == print_:
            return  # queued already, not finished
        self.status.seen += 1
        output = self.plan.output_url(info.url)
        if self.queue is not None:
            self._wait_for_capacity(on_event)
            job_id = self.queue.submit(self.plan, info.url, output, print_)
            record = WatchRecord(input=info.url, output=output, fingerprint=print_, state="queued", job_id=job_id)
            self.state.add(record)
            self._pending[info.url] = record
            return
        job = Job(task=self.plan.task, profile=self.plan.profile, input_url=info.url, output_url=output,
                  options=self.plan.options)
        # Noted before the work: a kill in the middle leaves a temporary file that the next start removes.
        self.state.add(WatchRecord(input=info.url, output=output, fingerprint=print_, state="started"))
        started = time.monotonic()
        done = attempt(self.restorer, job)
        record = WatchRecord(input=info.url, output=output, fingerprint=print_,
                             state="succeeded" if done.succeeded else "failed", error=done.error,
                             seconds=round(time.monotonic() - started, 3))
        self.state.add(record)
        self._finish(record, on_event)

    def _wait_for_capacity(self, on_event: Event) -> None:
        while len(self._pending) >= self.queue.max_in_flight:
            self._collect(on_event, block=True)

    def _collect(self, on_event: Event, block: bool) -> None:
        if self.queue is None or not self._pending:
            return
        by_job = {r.job_id: r for r in self._pending.values()}
        for job_id, job in self.queue.finished(list(by_job), block).items():
            queued = by_job[job_id]
            del self._pending[queued.input]
            record = queued.model_copy(update={
                "state": "succeeded" if job.state is JobState.succeeded else "failed", "error": job.error,
                "seconds": job.timings.total if job.timings else None, "at": time.time()})
            self.state.add(record)
            self._finish(record, on_event)

    def _finish(self, record: WatchRecord, on_event: Event, counted: bool = True) -> None:
        destination = self.move_done if record.state == "succeeded" else self.move_failed
        if destination:
            try:
                moved = self.mover.move(record.input, destination)
            except (OSError, InvalidJobError) as exc:
                log.warning("could not move an input", extra={"input": record.input, "error": str(exc)})
            else:
                record = record.model_copy(update={"moved_to": moved})
                self.state.add(record)
        if not counted:
            return
        if record.state == "succeeded":
            self.status.done += 1
        else:
            self.status.failed += 1
            self._report(record)
        self.status.finished_one()
        on_event("restored" if record.state == "succeeded" else "failed", record, self.status)

    def _report(self, record: WatchRecord) -> None:
        """The failure report is created with the first failure: no empty file when nothing failed."""
        self.failures += 1
        if self.report is None:
            return
        line = {"input": record.input, "output": record.output, "job_id": record.job_id,
                **(record.error.model_dump() if record.error else {}), "at": record.at}
        with self.report.open("a") as fh:
            fh.write(json.dumps(line) + "\n")


class JobQueue:
    """``--queue``: one job per input for the workers; ids derived from (watch, input, fingerprint)."""

    def __init__(self, store: JobStore, submitter, max_in_flight: int, poll: float = 0.25) -> None:
        self.store = store
        self.submitter = submitter
        self.max_in_flight = max_in_flight
        self.poll = poll

    def submit(self, plan: WatchPlan, input_url: str, output_url: str, print_: str) -> str:
        job_id = uuid.uuid5(_NAMESPACE, f"{plan.watch_id}\n{input_url}\n{print_}").hex
        job = Job(id=job_id, task=plan.task, profile=plan.profile, input_url=input_url, output_url=output_url,
                  options=plan.options)
        # Record and message in one script (never a record without its message); an earlier run's job is left
        # alone: just wait for it.
        self.submitter.create_queued(job, overwrite=False, capped=False)
        return job_id

    def finished(self, job_ids: list[str], block: bool) -> dict[str, Job]:
        """Finished jobs among ``job_ids`` (by id); with ``block``, waits until at least one is."""
        while True:
            jobs = [job for job in self.store.get_many(job_ids) if job is not None]
            done = {job.id: job for job in jobs if job.state.finished}
            known = {job.id for job in jobs}
            for missing in set(job_ids) - known:  # expired or deleted record: report it rather than wait forever
                done[missing] = Job(id=missing, task=Task.denoise, input_url="?", output_url="?",
                                    state=JobState.failed,
                                    error=JobError(type="job_lost", message=f"job {missing} is not in the job store "
                                                   "(expired or deleted); delete its state line to queue it again"))
            if done or not block:
                return done
            time.sleep(self.poll)
