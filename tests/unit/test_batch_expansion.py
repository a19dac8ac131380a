"""The batch expansion step (``BatchSubmitter.expand_step``, what ``imgrestore.expand_batch`` runs) in-process
against a real Redis: what it queues, what it skips, where it stops and how it continues, without a worker."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from services.config import Settings
from services.jobs import JobState
from services.queue.batch_store import Batch, BatchStore
from services.queue.celery_app import NOTIFY_TASK, create_app
from services.queue.job_store import JobStore
from services.queue.submission import DEFAULT_INCLUDE, INPUTS_SOURCE, BatchSubmitter, Submitter, batch_job_id
from services.webhooks import batch_finished_notifications, finished_notifications
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


def _batch_webhooks(expander: BatchSubmitter, batch_id: str) -> list[dict]:
    """Payloads of the ``batch.finished`` webhooks queued for ``batch_id`` (notify tasks on the control queue)."""
    payloads = []
    for raw in expander.jobs.redis.lrange(expander.settings.control_queue, 0, -1):
        message = json.loads(raw)
        if message["headers"]["task"] != NOTIFY_TASK:
            continue
        body = message["body"]
        if message["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body).decode()
        url, event, payload = json.loads(body)[0][:3]
        if event == "batch.finished" and payload["id"] == batch_id:
            payloads.append(payload)
    return payloads


def _finish_as_worker(expander: BatchSubmitter, job_ids: list[str]) -> None:
    """Fails each job and queues the webhooks its finish owes, as ``JobRunner`` does."""
    for job_id in job_ids:
        _finish(expander, [job_id])
        for note in finished_notifications(expander.jobs, expander.batches, expander.jobs.get(job_id)):
            note.queue(expander.app, expander.settings.control_queue)


def test_a_prefix_batch_whose_jobs_all_ended_before_its_seal_sends_its_webhook_once(expander):
    """Every job finished while the batch was still unsealed (their finishes owed no batch webhook): the seal does."""
    urls = [ROOT + f"{n:04d}.txt" for n in range(2000)]
    urls[10], urls[20] = ROOT + "0010.png", ROOT + "0020.png"
    listing = Listing(urls)
    batch = _batch(expander, callback_url="https://hooks.example.com/batches")
    cursor = expander.expand_step(batch.id, ROOT, DEFAULT_INCLUDE, "", listing, max_in_flight=2)
    assert cursor is not None and not expander.batches.get(batch.id).sealed

    _finish_as_worker(expander, _queued_ids(expander))
    assert _batch_webhooks(expander, batch.id) == []  # the finishes saw a batch still submitting

    assert expander.expand_step(batch.id, ROOT, DEFAULT_INCLUDE, cursor, listing, max_in_flight=2) is None
    sent = _batch_webhooks(expander, batch.id)
    assert len(sent) == 1 and (sent[0]["state"], sent[0]["total"], sent[0]["failed"]) == ("finished", 2, 2)
    assert expander.batches.get(batch.id).finished_at is not None

    # A redelivered last step seals again: the webhook was claimed, it is not sent twice.
    assert expander.expand_step(batch.id, ROOT, DEFAULT_INCLUDE, cursor, listing, max_in_flight=2) is None
    assert len(_batch_webhooks(expander, batch.id)) == 1


def test_a_large_inputs_batch_whose_jobs_all_ended_before_its_seal_sends_its_webhook_once(expander):
    batch = _batch(expander, callback_url="https://hooks.example.com/batches")
    expander.batches.save_inputs(batch.id, [ROOT + f"{n:04d}.png" for n in range(1000)])
    cursor = expander.expand_step(batch.id, INPUTS_SOURCE, [], "", Listing([]), max_in_flight=1000)
    assert cursor == "1000" and not expander.batches.get(batch.id).sealed

    _finish_as_worker(expander, _queued_ids(expander))
    assert _batch_webhooks(expander, batch.id) == []

    assert expander.expand_step(batch.id, INPUTS_SOURCE, [], cursor, Listing([]), max_in_flight=1000) is None
    assert [sent["failed"] for sent in _batch_webhooks(expander, batch.id)] == [1000]


def test_when_the_seal_comes_first_the_last_job_sends_the_webhook_and_the_seal_does_not(expander):
    batch = _batch(expander, callback_url="https://hooks.example.com/batches")
    listing = Listing([ROOT + "a.png", ROOT + "b.png"])
    assert expander.expand_step(batch.id, ROOT, DEFAULT_INCLUDE, "", listing, max_in_flight=10) is None
    first, last = _queued_ids(expander)
    _finish_as_worker(expander, [first])
    assert _batch_webhooks(expander, batch.id) == []  # sealed, not complete: nobody sends

    _finish_as_worker(expander, [last])
    assert len(_batch_webhooks(expander, batch.id)) == 1
    expander.seal(batch.id)  # a late or repeated seal finds it claimed
    assert len(_batch_webhooks(expander, batch.id)) == 1


def test_a_listing_that_fails_for_good_after_every_job_ended_sends_the_webhook_once(expander):
    batch = _batch(expander, callback_url="https://hooks.example.com/batches")
    expander.add_many(batch, [ROOT + "a.png"], ROOT)
    _finish_as_worker(expander, _queued_ids(expander))

    expander.seal(batch.id, listing_error="AccessDenied: s3://photos/scans/")  # what the expand task records

    sent = _batch_webhooks(expander, batch.id)
    assert len(sent) == 1 and sent[0]["state"] == "finished"
    assert expander.batches.listing_error(batch.id) == "AccessDenied: s3://photos/scans/"


class _CancelledDuringListing(Listing):
    """Marks the batch cancelled once the listing passes ``at``: the first step of ``DELETE /v1/batches/{id}``, whose
    own cancelling of queued jobs has not run yet."""

    def __init__(self, urls: list[str], batches: BatchStore, batch_id: str, at: str) -> None:
        super().__init__(urls)
        self.batches, self.batch_id, self.at = batches, batch_id, at

    def list(self, prefix_url, start_after=None, on_skipped=None):
        for info in super().list(prefix_url, start_after, on_skipped):
            if info.url == self.at:
                self.batches.cancel(self.batch_id)
            yield info


def test_an_expansion_that_cancels_the_last_queued_jobs_of_a_cancelled_batch_sends_its_webhook(expander):
    batch = _batch(expander, callback_url="https://hooks.example.com/batches")
    urls = [ROOT + f"{n:04d}.txt" for n in range(2000)]
    urls[10], urls[1500] = ROOT + "0010.png", ROOT + "1500.png"
    listing = _CancelledDuringListing(urls, expander.batches, batch.id, at=ROOT + "1200.txt")

    assert expander.expand_step(batch.id, ROOT, DEFAULT_INCLUDE, "", listing, max_in_flight=10) is None

    stopped = expander.batches.get(batch.id)
    assert (stopped.state.value, stopped.total, stopped.failed) == ("finished", 2, 2)  # both cancelled here
    assert len(_batch_webhooks(expander, batch.id)) == 1
    expander.cancel(batch.id)  # the rest of the API's cancel, and its own check, find nothing more to do
    for note in batch_finished_notifications(expander.batches, batch.id):
        note.queue(expander.app, expander.settings.control_queue)
    assert len(_batch_webhooks(expander, batch.id)) == 1
