"""Model slots: how a worker overlaps its stages (issue 12) — the model never waits for I/O or codecs.

A worker runs ``IMGRESTORE_WORKER_CONCURRENCY`` pool processes, each one job at a time from download to upload (so
acks, leases, retries, job records and per-job time limits keep their meaning: one job, one process, one message).
With ``IMGRESTORE_MODEL_SLOTS`` = M ≥ 1, at most M of them run the model at any moment; the others download and
decode their next image, or encode and upload their last one, meanwhile. With concurrency = M + 2, while one image is
on the model the next is being fetched and decoded and the previous one encoded and uploaded; the process that
finishes decoding first waits at the slot with its image ready, so the model starts again as soon as it is free.

    process A:  download decode [wait] ███ model ███ encode upload  download decode [wait] ███ model ███ …
    process B:  download decode [ wait ─────────── ] ███ model ███ encode upload  download decode [wait] …
    process C:  download decode [ wait ─────────────────────────── ] ███ model ███ encode upload …

The queue between the stages is the slot's waiting line: bounded by the concurrency, so memory is too (each process
holds at most one image and one output). Prefetching is the pool's: each process takes its next message when it
finishes its last job (``worker_prefetch_multiplier`` 1).

A slot is an exclusive ``flock`` on one of M files in a folder the worker's main process makes before it forks its
pool: the kernel drops the lock when its holder exits for any reason (a SIGKILL, a hard time limit, an OOM kill), so a
dead process never keeps the model from the others, and its job's message is delivered again as for any lost worker.
Each acquisition opens its own descriptor (flock locks belong to an open file description), so threads of one
process (``--pool threads``) exclude each other too.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# How often a process that found every slot busy tries them all again when there are several slots (with one slot it
# simply blocks in flock until the holder lets go).
_POLL_SECONDS = 0.002


class ModelSlots:
    """At most ``count`` holders at once among the processes (and threads) that share ``directory``."""

    def __init__(self, directory: Path, count: int) -> None:
        if count < 1:
            raise ValueError(f"model slots must be at least 1, got {count}")
        self.directory = Path(directory)
        self.count = count
        self.directory.mkdir(parents=True, exist_ok=True)
        self.paths = [self.directory / f"model-slot-{i}.lock" for i in range(count)]
        for path in self.paths:
            path.touch(exist_ok=True)

    @contextmanager
    def turn(self) -> Iterator[float]:
        """Holds a slot for the ``with`` block; yields the seconds spent waiting for it."""
        started = time.perf_counter()
        fd = self._acquire()
        try:
            yield time.perf_counter() - started
        finally:
            os.close(fd)  # releases the lock

    def _acquire(self) -> int:
        if self.count == 1:
            fd = os.open(self.paths[0], os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
            return fd
        while True:
            for path in self.paths:
                fd = os.open(path, os.O_RDWR)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return fd
                except BlockingIOError:
                    os.close(fd)
                except BaseException:
                    os.close(fd)
                    raise
            time.sleep(_POLL_SECONDS)
