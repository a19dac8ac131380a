"""The batch expansion step (``BatchSubmitter.expand_step``, what ``imgrestore.expand_batch`` runs) in-process
against a real Redis: what it queues, what it skips, where it stops and how it continues, without a worker."""

from __future__ import annotations

import json
import uuid

import pytest

from services.config import Settings
from services.jobs import JobState
from services.queue.batch_store import Batch, BatchStore
from services.queue.celery_app import create_app
from services.queue.job_store import JobStore
from services.queue.submission import DEFAULT_INCLUDE, BatchSubmitter, Submitter, batch_job_id
from tests.support.listing import Listing

ROOT = "s3://photos/scans/"


@pytest.fixture()
def expander(redis_url: str) -> BatchSubmitter:
    prefix = f"bx{uuid.uuid4().hex[:8]}:"
    settings = Settings(redis_url=redis_url, key_prefix=prefix, queue_prefix=prefix)
    store = JobStore.from_url(redis_url, prefix)
    app = create_app(settings)
    return BatchSubmitter(settings, store, BatchStore(store), Submitter(settings, store, app), app)


def _batch(expander: BatchSubmitter, **fields) -> Batch:
    return expander.batches.create(Batch(task="denoise", source=ROOT, **fields))


def _queued_ids(expander: BatchSubmitter) -> list[str]:
    raw = expander.jobs.redis.lrange(expander.settings.queue_for("denoise"), 0, -1)
    return [json.loads(message)["headers"]["id"] for message in raw]


def _finish(expander: BatchSubmitter, job_ids: list[str]) -> None:
    for job_id in job_ids:
        expander.jobs.start(job_id, "w@test", 10_000)
        expander.jobs.fail(job_id, error=_error())


def _error():
    from services.jobs import JobError

    return JobError(type="image_decode", message="not an image")


def test_a_step_queues_each_matching_input_once_and_seals_the_batch(expander):
    batch = _batch(expander, output_prefix=ROOT + "clean/")  # outputs inside the listed prefix
    listing = Listing([ROOT + "a.png", ROOT + "b/c.JPG", ROOT + "notes.txt", ROOT + "clean/a.png",
                       "s3://photos/other/x.png"])

    cursor = expander.expand_step(batch.id, ROOT, DEFAULT_INCLUDE, "", listing, max_in_flight=100)

    assert cursor is None
    done = expander.batches.get(batch.id)
    assert done.sealed and done.total == 2
    expected = {batch_job_id(batch.id, ROOT + "a.png"), batch_job_id(batch.id, ROOT + "b/c.JPG")}
    assert set(_queued_ids(expander)) == expected  # not the text file, its own earlier output, another prefix
    job = expander.jobs.get(batch_job_id(batch.id, ROOT + "b/c.JPG"))
    assert (job.state, job.batch_id) == (JobState.queued, batch.id)
    assert job.output_url == ROOT + "clean/b/c.JPG"


def test_listing_again_from_the_start_queues_nothing_twice(expander):
    """A step that died before saving its cursor is run again from the last cursor: its inputs are members."""
    batch = _batch(expander, output_prefix="s3://photos/clean/")
    listing = Listing([ROOT + f"{n}.png" for n in range(5)])
    expander.expand_step(batch.id, ROOT, DEFAULT_INCLUDE, "", listing, max_in_flight=100)
    queued = _queued_ids(expander)

    assert expander.expand_step(batch.id, ROOT, DEFAULT_INCLUDE, "", listing, max_in_flight=100) is None

    assert _queued_ids(expander) == queued and len(queued) == 5
    assert expander.batches.get(batch.id).total == 5
    assert expander.jobs.get(queued[0]).output_url.startswith("s3://photos/clean/")


def test_a_step_stops_at_a_page_boundary_once_the_batch_has_enough_unfinished_jobs(expander):
    # 3 images among 2 000 listed keys: after the first page (1 000 keys) 2 jobs are unfinished, the limit.
    urls = [ROOT + f"{n:04d}.txt" for n in range(2000)]
    urls[10], urls[20], urls[1500] = ROOT + "0010.png", ROOT + "0020.png", ROOT + "1500.png"
    listing = Listing(urls)
    batch = _batch(expander)

    cursor = expander.expand_step(batch.id, ROOT, DEFAULT_INCLUDE, "", listing, max_in_flight=2)

    assert cursor == ROOT + "0999.txt" and listing.listed == 1000
    stopped = expander.batches.get(batch.id)
    assert not stopped.sealed and stopped.total == 2
    assert expander.jobs.redis.hget(expander.batches.key(batch.id), "cursor") == cursor  # a crash resumes here

    _finish(expander, _queued_ids(expander))
    assert expander.expand_step(batch.id, ROOT, DEFAULT_INCLUDE, cursor, listing, max_in_flight=2) is None
    final = expander.batches.get(batch.id)
    assert final.sealed and (final.total, final.failed) == (3, 2)
    assert listing.listed == 2000  # continued after the cursor, did not list the first page again


def test_a_step_lists_at_most_its_page_budget(expander):
    listing = Listing([ROOT + f"{n:04d}.txt" for n in range(2500)])
    batch = _batch(expander)

    cursor = expander.expand_step(batch.id, ROOT, DEFAULT_INCLUDE, "", listing, max_in_flight=10, page_budget=2)

    assert cursor == ROOT + "1999.txt"  # the rest goes to the next message: a worker slot is never held long
    assert not expander.batches.get(batch.id).sealed
