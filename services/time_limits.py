"""Per-job time limits (issue 11, finding 9): cheap inputs must not buy unbounded compute.

A job may run ``IMGRESTORE_JOB_TIME_LIMIT_BASE`` seconds plus ``IMGRESTORE_JOB_TIME_LIMIT_PER_MEGAPIXEL`` for each
megapixel it decodes (every page of a document counts, as it is decoded). Loading a model (the first job of a
process) is not counted: it is the process's cost, not the job's.

- **Soft limit**: ``JobClock.check`` runs between stages and before every tile batch; past the limit the job fails
  with ``time_limit_exceeded`` (a permanent error: recorded, acknowledged, never retried, nothing uploaded). The same
  holds in ``imgrestore run``, where that file fails and the run goes on with the next.
- **Hard limit**: ``IMGRESTORE_JOB_TIME_LIMIT_HARD_GRACE`` seconds past the soft one, for work that never reaches a
  check (one stuck ONNX Runtime call, a codec chewing on a hostile file). Only workers have it
  (``HardLimitWatchdog``): the job is recorded as failed and the pool process exits, so Celery starts a fresh one;
  the message comes back and is dropped as a duplicate of a finished job. ``imgrestore run`` has no hard limit:
  ending its process would end the whole run (Ctrl-C is its operator's hard limit).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import PermanentError

if TYPE_CHECKING:
    from .config import Settings
    from .jobs import Job

log = logging.getLogger(__name__)


class JobTimeLimitError(PermanentError):
    """The job ran past its time limit (IMGRESTORE_JOB_TIME_LIMIT_*)."""

    code = "time_limit_exceeded"


@dataclass(frozen=True)
class TimeLimits:
    base: float  # seconds every job gets; 0 turns the limits off
    per_megapixel: float
    hard_grace: float

    @classmethod
    def from_settings(cls, settings: Settings) -> TimeLimits:
        return cls(settings.job_time_limit_base, settings.job_time_limit_per_megapixel,
                   settings.job_time_limit_hard_grace)

    @property
    def enabled(self) -> bool:
        return self.base > 0

    def soft_seconds(self, megapixels: float) -> float:
        return self.base + self.per_megapixel * megapixels

    def hard_seconds(self, megapixels: float) -> float:
        return self.soft_seconds(megapixels) + self.hard_grace


class JobClock:
    """The time one job has used against its limits. Written by the thread running the job; read by the watchdog."""

    def __init__(self, limits: TimeLimits, now: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._now = now
        self._started = now()
        self._excluded = 0.0
        self._paused_at: float | None = None
        self.megapixels = 0.0

    def count(self, megapixels: float) -> None:
        """Pixels decoded for this job: each megapixel buys ``per_megapixel`` more seconds."""
        self.megapixels += megapixels

    def elapsed(self) -> float:
        now = self._now()
        paused = now - self._paused_at if self._paused_at is not None else 0.0
        return now - self._started - self._excluded - paused

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside is not counted (model loading)."""
        if self._paused_at is not None:  # nested: the outer pause counts it
            yield
            return
        self._paused_at = self._now()
        try:
            yield
        finally:
            self._excluded += self._now() - self._paused_at
            self._paused_at = None

    def check(self, stage: str) -> None:
        """Raises ``JobTimeLimitError`` once the soft limit is past."""
        if not self.limits.enabled:
            return
        elapsed, limit = self.elapsed(), self.limits.soft_seconds(self.megapixels)
        if elapsed > limit:
            raise JobTimeLimitError(self.describe(elapsed, limit, f"at {stage}"))

    def over_hard_limit(self) -> bool:
        return self.limits.enabled and self.elapsed() > self.limits.hard_seconds(self.megapixels)

    def hard_limit_error(self) -> JobTimeLimitError:
        limit = self.limits.hard_seconds(self.megapixels)
        return JobTimeLimitError(self.describe(self.elapsed(), limit, "without reaching a check (hard limit, "
                                               "IMGRESTORE_JOB_TIME_LIMIT_HARD_GRACE past the soft one); its worker "
                                               "process was replaced"))

    def describe(self, elapsed: float, limit: float, where: str) -> str:
        limits = self.limits
        return (f"the job ran {elapsed:.1f} s, over its time limit of {limit:.1f} s ({limits.base:g} s + "
                f"{limits.per_megapixel:g} s/MP × {self.megapixels:.1f} MP: IMGRESTORE_JOB_TIME_LIMIT_BASE, "
                f"IMGRESTORE_JOB_TIME_LIMIT_PER_MEGAPIXEL), {where}; nothing was written — check the input, or "
                "raise the limits for such images")


class HardLimitWatchdog:
    """One per worker pool process: a daemon thread that calls ``on_expiry(job, clock)`` once when the job in hand
    passes its hard limit. ``on_expiry`` records the failure and ends the process; the watchdog stops after it."""

    def __init__(self, on_expiry: Callable[[Job, JobClock], None], interval: float = 0.25) -> None:
        self._on_expiry = on_expiry
        self._interval = interval
        self._current: tuple[Job, JobClock] | None = None
        self._thread: threading.Thread | None = None

    @contextmanager
    def watching(self, job: Job, clock: JobClock) -> Iterator[None]:
        if not clock.limits.enabled:
            yield
            return
        if self._thread is None:  # started after the fork, in the process that runs jobs
            self._thread = threading.Thread(target=self._watch, name="job-hard-limit", daemon=True)
            self._thread.start()
        self._current = (job, clock)
        try:
            yield
        finally:
            self._current = None

    def _watch(self) -> None:
        while True:
            time.sleep(self._interval)
            current = self._current
            if current is not None and current[1].over_hard_limit():
                job, clock = current
                log.error("job passed its hard time limit: ending this worker process",
                          extra={"job_id": job.id, "elapsed_s": round(clock.elapsed(), 1),
                                 "megapixels": round(clock.megapixels, 2)})
                self._on_expiry(job, clock)
                return
