"""One place builds what a process needs from Settings: every process gets the same stores, submitters and queues."""

from __future__ import annotations

from services.api.app import create_app
from services.config import Settings
from services.queue.celery_app import create_app as create_celery_app
from services.queue.celery_app import queue_names
from services.queue.clients import QueueClients


def test_clients_follow_the_settings(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, key_prefix="clients-test:", job_ttl_seconds=123, queue_prefix="cq.")
    clients = QueueClients.from_settings(settings)

    assert (clients.jobs.prefix, clients.jobs.ttl) == ("clients-test:", 123)
    assert clients.batches.jobs is clients.jobs and clients.submitter.store is clients.jobs
    assert clients.batch_submitter.submitter is clients.submitter and clients.batch_submitter.batches is clients.batches
    assert queue_names(settings) == ["cq.denoise", "cq.colorize", "cq.watermark", "cq.control"]


def test_api_worker_and_celery_agree_on_the_queues(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, queue_prefix="agree.")
    declared = [queue.name for queue in create_celery_app(settings).conf.task_queues]
    ctx = create_app(settings).state.ctx

    assert declared == queue_names(settings)
    assert ctx.jobs.ttl == settings.job_ttl_seconds and ctx.batch_submitter.batches is ctx.batches
