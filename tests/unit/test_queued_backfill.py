"""``QueuedBackfill`` (a backfill through the workers) in-process against a real Redis: it queues every input once,
never has more than ``max_in_flight`` unfinished, resumes after a crash without queueing anything twice, and
reports what failed. A thread in the test plays the workers."""

from __future__ import annotations

import json
import threading
import uuid

import pytest

from services.backfill import BackfillExists, BackfillPlan, QueuedBackfill
from services.config import Settings
from services.jobs import JobError, OutputInfo, StageTimings, Task
from services.queue.batch_store import BatchStore
from services.queue.celery_app import create_app
from services.queue.job_store import JobStore
from services.queue.submission import BatchSubmitter, Submitter
from tests.support.listing import Listing

SOURCE = "s3://archive/scans/"
OUTPUT = "s3://archive/clean/"
RESULT = OutputInfo(width=1, height=1, mode="L", format="PNG", bytes=1, megapixels=0.000001, model="m", tiles=1)


class Service:
    def __init__(self, redis_url: str) -> None:
        prefix = f"qb{uuid.uuid4().hex[:8]}:"
        self.settings = Settings(redis_url=redis_url, key_prefix=prefix, queue_prefix=prefix)
        self.store = JobStore.from_url(redis_url, prefix)
        self.batches = BatchStore(self.store)
        app = create_app(self.settings)
        self.submitter = BatchSubmitter(self.settings, self.store, self.batches,
                                        Submitter(self.settings, self.store, app), app)
        self.queue = self.settings.queue_for("denoise")

    def backfill(self, listing: Listing, max_in_flight: int = 100) -> QueuedBackfill:
        plan = BackfillPlan(task=Task.denoise, source=SOURCE, output=OUTPUT)
        return QueuedBackfill(plan, self.store, self.batches, self.submitter, listing, max_in_flight, poll=0.005)

    def queued_ids(self) -> list[str]:
        return [json.loads(raw)["headers"]["id"] for raw in self.store.redis.lrange(self.queue, 0, -1)]


@pytest.fixture()
def service(redis_url: str) -> Service:
    return Service(redis_url)


def _inputs(count: int) -> list[str]:
    return [SOURCE + f"p{n:03d}.png" for n in range(count)]


class Workers(threading.Thread):
    """Takes messages off the queue and finishes their jobs, recording how many of the backfill's jobs were
    unfinished each time one was taken; inputs named in ``bad`` fail."""

    def __init__(self, service: Service, batch_id: str, bad: set[str] = frozenset()) -> None:
        super().__init__(daemon=True)
        self.service, self.batch_id, self.bad = service, batch_id, bad
        self.unfinished_seen: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        store = self.service.store
        while not self.stop.is_set():
            popped = store.redis.brpop([self.service.queue], timeout=0.05)
            if popped is None:
                continue
            job_id = json.loads(popped[1])["headers"]["id"]
            batch = self.service.batches.get(self.batch_id)
            self.unfinished_seen.append(batch.total - batch.done)
            store.start(job_id, "w@test", 10_000)
            if store.get(job_id).input_url in self.bad:
                store.fail(job_id, JobError(type="image_decode", message="truncated PNG"))
            else:
                store.succeed(job_id, RESULT, StageTimings(), "stub")


def test_every_input_is_queued_once_as_a_job_of_the_backfill(service):
    backfill = service.backfill(Listing(_inputs(5) + [SOURCE + "readme.txt", OUTPUT + "p000.png"]))

    status = backfill.run(resume=False, on_progress=lambda _: None, wait=False)

    assert (status.listed, status.queued, status.skipped, status.listing_done) == (5, 5, 0, True)
    batch = service.batches.get(backfill.plan.backfill_id)
    assert batch.sealed and batch.total == 5 and batch.kind == "backfill"
    outputs = sorted(service.store.get(i).output_url for i in service.queued_ids())
    assert outputs == [OUTPUT + f"p{n:03d}.png" for n in range(5)]


def test_the_same_backfill_again_needs_resume(service):
    service.backfill(Listing(_inputs(2))).run(resume=False, on_progress=lambda _: None, wait=False)
    with pytest.raises(BackfillExists, match="--resume"):
        service.backfill(Listing(_inputs(2))).run(resume=False, on_progress=lambda _: None, wait=False)


def test_a_resumed_backfill_queues_exactly_what_the_crashed_one_did_not(service):
    with pytest.raises(ConnectionResetError):
        service.backfill(Listing(_inputs(7), fail_after=3)).run(resume=False, on_progress=lambda _: None)
    assert len(service.queued_ids()) == 3

    status = service.backfill(Listing(_inputs(7))).run(resume=True, on_progress=lambda _: None, wait=False)

    assert (status.queued, status.skipped) == (4, 3)
    queued = service.queued_ids()
    assert len(queued) == len(set(queued)) == 7
    assert service.batches.get(service.backfill(Listing([])).plan.backfill_id).total == 7


def test_never_more_than_max_in_flight_unfinished_and_it_waits_for_all(service):
    backfill = service.backfill(Listing(_inputs(9)), max_in_flight=3)
    workers = Workers(service, backfill.plan.backfill_id, bad={SOURCE + "p004.png"})
    workers.start()
    try:
        status = backfill.run(resume=False, on_progress=lambda _: None, wait=True)
    finally:
        workers.stop.set()
        workers.join(5)

    assert (status.succeeded, status.failed, status.done) == (8, 1, 9)
    assert len(workers.unfinished_seen) == 9 and max(workers.unfinished_seen) <= 3
    assert [f["input"] for f in backfill.failures()] == [SOURCE + "p004.png"]
    assert next(backfill.failures())["type"] == "image_decode"
