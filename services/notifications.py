"""Which webhooks a finished job owes: its own, and its batch's when it was the batch's last job.

Whoever moves a job to its final state calls ``finished_notifications`` once — the worker, or the API when it
cancels a queued job — and sends each ``Notification`` as an ``imgrestore.notify`` task.
"""

from __future__ import annotations

from dataclasses import dataclass

from .batches import BatchStore
from .jobs import Job
from .jobstore import JobStore


@dataclass(frozen=True)
class Notification:
    url: str
    event: str  # "job.finished" or "batch.finished"
    payload: dict


def finished_notifications(store: JobStore, batches: BatchStore, job: Job) -> list[Notification]:
    """The webhooks owed once ``job`` reached its final state: its own, and its batch's if it was the last one.

    Whoever finished the job calls this once (the worker, or the API when it cancels a queued job).
    """
    notes = []
    if job.callback_url:
        final = store.get(job.id)
        notes.append(Notification(job.callback_url, "job.finished", final.model_dump(mode="json")))
    if job.batch_id and batches.mark_finished_once(job.batch_id):
        batch = batches.get(job.batch_id)
        if batch.callback_url:
            payload = batch.model_dump(mode="json") | {"state": batch.state.value}
            notes.append(Notification(batch.callback_url, "batch.finished", payload))
    return notes
