"""Orphans: unfinished jobs that nobody runs and no message will ever bring back.

Every path that ends a delivery keeps the message (issue 15), so an orphan needs something outside them: a worker
SIGKILLed between kombu's BRPOP and its write to ``unacked`` (the message existed only in that process), a crash
between recording a job and publishing it, a Redis that lost its last second of writes, a bug. The sweep runs in
every worker (and in a waiting ``backfill``), one process per interval: a job ``queued`` or ``running`` with no
lease and unchanged for longer than the visibility timeout, whose id is on no message in its queues nor in
``unacked``, is claimed by exactly one sweeper (``JobStore.claim_orphan``, one Lua script) and published again. The
claim is a lease that lapses: a sweeper that dies before publishing leaves the job to be found again. A duplicate
message (a delivery in flight at the moment of the check) is harmless: the job store runs a job once at a time and
counts its end once.

Every unchanged job is looked at, not the oldest thousand: a backlog of older jobs waiting with their messages (a
queue whose workers are busy elsewhere or scaled to zero) once hid an orphan behind it for as long as it lasted. A
sweeper only takes jobs created on its own queues (the record names the queue): it cannot see the messages of
another deployment sharing the job store's key prefix, so to it every job of that deployment would look orphaned.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

from .. import metrics
from ..config import Settings
from . import depth
from .celery_app import queue_names
from .job_store import JobStore
from .outages import REDIS_DOWN
from .submission import Submitter

log = logging.getLogger(__name__)

# Reading the queues costs about 1.5 KB a waiting message, the unfinished index about 40 B a job; past this many
# waiting messages a sweep is skipped (and says so), and it reads at most this many of the oldest unchanged jobs.
MAX_SCANNED_MESSAGES = 200_000


class OrphanSweeper:
    def __init__(self, settings: Settings, store: JobStore, submitter: Submitter, name: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store = store
        self.submitter = submitter
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.clock = clock
        self.queue_names = queue_names(settings)

    def sweep(self, min_age: float | None = None) -> list[str]:
        """Re-queues every orphan of this deployment's queues unchanged for ``min_age`` seconds (default: the
        visibility timeout); returns the ids this sweeper re-queued."""
        cutoff = self.clock() - (self.settings.visibility_timeout if min_age is None else min_age)
        stale = self.store.stale_ids(cutoff, MAX_SCANNED_MESSAGES)
        if not stale:
            return []
        waiting = sum(depth.waiting(self.store.redis, name) for name in self.queue_names)
        if waiting > MAX_SCANNED_MESSAGES:
            log.warning("orphan sweep skipped: too many waiting messages to read", extra={
                "waiting": waiting, "limit": MAX_SCANNED_MESSAGES, "unchanged": len(stale)})
            return []
        with_messages = depth.task_ids_with_messages(self.store.redis, self.queue_names)
        candidates = self.store.unheld_unfinished([job_id for job_id in stale if job_id not in with_messages],
                                                  self.queue_names)
        requeued = []
        for job_id in candidates:
            try:
                if self._claim_and_publish(job_id, cutoff):
                    requeued.append(job_id)
            except REDIS_DOWN:
                raise
            except Exception:  # one unreadable record must not keep the orphans after it waiting (its claim lapses)
                log.exception("orphan not re-queued; the sweep goes on", extra={"job_id": job_id})
        return requeued

    def sweep_if_my_turn(self, interval: float) -> list[str]:
        """``sweep()`` when no other process has swept in the last ``interval`` seconds (it reads every queue)."""
        if not self.store.take_sweep_turn(self.name, interval):
            return []
        return self.sweep()

    def requeue_if_orphan(self, job_id: str) -> bool:
        """``imgrestore retry`` of an unfinished job: re-queued only when nobody holds it and it has no message."""
        if job_id in depth.task_ids_with_messages(self.store.redis, self.queue_names):
            return False
        return self._claim_and_publish(job_id, self.clock())

    def _claim_and_publish(self, job_id: str, cutoff: float) -> bool:
        if not self.store.claim_orphan(job_id, self.name, cutoff, self.settings.visibility_timeout * 1000):
            return False
        job = self.store.get(job_id)
        self.submitter.enqueue(job)  # a crash before this line: the claim lapses, the next sweep finds it again
        metrics.ORPHANS_REQUEUED.labels(job.task.value).inc()
        log.warning("orphan job re-queued: it was running with no lease and no message",
                    extra={"job_id": job_id, "worker": job.worker, "started_at": str(job.started_at),
                           "sweeper": self.name})
        return True
