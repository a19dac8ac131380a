"""The Celery application: Redis broker and backend, JSON only, at-least-once delivery with leases.

Delivery contract (see README, "Reliability"):
- ``task_acks_late`` + ``task_reject_on_worker_lost``: a job is acknowledged only after it finished, so a worker that
  dies mid-job does not lose it.
- A live worker keeps extending the lease of every message it holds and claims it (``services.queue.leases``), so a long
  job is never delivered twice; a dead worker's claims lapse ``lease_ttl`` seconds after its last renewal and the
  surviving workers' keepers reclaim its messages within a renew interval: redelivery after lease_ttl ± renew
  interval (≈ 10 s by default). Backstop for a worker without a keeper: messages become visible again
  ``visibility_timeout`` seconds after their last renewal, swept every ``unacked_restore_interval`` seconds
  (throttle 1: every sweep scans).
"""

from __future__ import annotations

import json
import uuid

from celery import Celery
from kombu import Exchange, Queue

from ..config import Settings, get_settings
from ..jobs import Task

RESTORE_TASK = "imgrestore.restore"
NOTIFY_TASK = "imgrestore.notify"  # delivers one webhook (services/webhooks.py)


def task_queue_names(settings: Settings) -> list[str]:
    """One queue per task, in ``Task`` order: where jobs wait, and what the queued-job caps count."""
    return [settings.queue_for(task.value) for task in Task]


def queue_names(settings: Settings) -> list[str]:
    """Every queue the app declares and a worker may read: the task queues, then the control queue. The API's
    metrics, the monitor and the orphan sweep read these same names."""
    return task_queue_names(settings) + [settings.control_queue]


def _queue(name: str) -> Queue:
    """A queue bound to its own direct exchange under its own name. A bare ``Queue(name)`` is bound to Celery's
    default exchange and key (the default queue's name), so the worker banner showed every queue as
    ``exchange=<prefix>denoise key=<prefix>denoise`` — messages go by queue name, but that read as misrouting."""
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def celery_config(settings: Settings) -> dict:
    return {
        "broker_url": settings.redis_url,
        "result_backend": settings.redis_url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "result_expires": 24 * 3600,
        # Job state lives in the job store; storing Celery results too would make every send subscribe to a
        # result channel (memory that grows with each job a backfill queues) for nothing.
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_concurrency": settings.worker_concurrency,
        # With late acks, a job whose broker connection dropped will be delivered again: stop it here.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        # Publishing (submit, retries, backfills) rides out a Redis restart of up to ~30 s.
        "task_publish_retry_policy": {"max_retries": 30, "interval_start": 0.2, "interval_step": 0.5,
                                      "interval_max": 2.0},
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            "unacked_restore_interval": settings.unacked_restore_interval,
            "unacked_restore_throttle": 1,
            # The sweep takes a Redis lock; kombu's default 300 s expiry means a worker killed mid-sweep would stop
            # all redelivery for five minutes. A sweep takes milliseconds, so a short expiry costs nothing.
            "unacked_mutex_expire": max(10, 3 * settings.unacked_restore_interval),
        },
        "result_backend_transport_options": {"retry_policy": {"timeout": 5.0}},
        "redis_backend_health_check_interval": 30,
        "task_queues": [_queue(name) for name in queue_names(settings)],
        "task_default_queue": settings.queue_for(Task.denoise.value),
        # Celery events, so Flower and `celery events` see workers and tasks; task-sent events (a task waiting in
        # its queue) only when asked for: they cost a PUBLISH per job (IMGRESTORE_TASK_SENT_EVENTS).
        "worker_send_task_events": True,
        "task_send_sent_event": settings.task_sent_events,
        "worker_hijack_root_logger": False,
        # SIGTERM: stop taking jobs, let running ones finish; a second signal (cold shutdown) still grants them
        # this long before they are requeued.
        "worker_soft_shutdown_timeout": settings.worker_soft_shutdown_timeout,
        "worker_enable_soft_shutdown_on_idle": True,
    }


def send(app: Celery, name: str, args: list, queue: str, task_id: str | None = None,
         countdown: float | None = None) -> None:
    """Publishes a task whose outcome lives elsewhere (job store, batch counters, logs).

    ``send_task`` ignores ``task_ignore_result``: unless told per call, it subscribes to each task's result channel
    in Redis — a subscription (and memory) per job that a backfill of millions would never release.
    """
    app.send_task(name, args=args, queue=queue, task_id=task_id, ignore_result=True, countdown=countdown)


def encode_message(name: str, args: list, queue: str, task_id: str) -> str:
    """The message kombu's Redis transport would ``LPUSH`` onto ``queue`` for this task, as a string.

    Lets the job store push it in the same Lua script that writes the job record (one round trip, and never a
    record without its message). Celery protocol 2 with only what a worker reads: headers ``lang``, ``task``,
    ``id``, ``ignore_result`` (every other header is optional and at its default here; ``argsrepr``, which Celery
    fills with a second copy of the arguments, is left out: Flower shows the arguments from the body), an empty
    embed, the JSON body stored as it is (``body_encoding`` utf-8, which kombu passes through) rather than base64 (a
    third larger), compact separators. No ``task-sent`` event: ``Submitter`` sends those when configured to.
    ~0.6 KB against Celery's 2.4 KB for a job.
    """
    compact = {"separators": (",", ":")}
    headers = {"lang": "py", "task": name, "id": task_id, "ignore_result": True}
    properties = {"delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
                  "body_encoding": "utf-8", "delivery_tag": uuid.uuid4().hex}
    return json.dumps({"body": json.dumps([args, {}, {}], **compact), "content-encoding": "utf-8",
                       "content-type": "application/json", "headers": headers, "properties": properties}, **compact)


def create_app(settings: Settings | None = None) -> Celery:
    app = Celery("imgrestore")
    app.conf.update(celery_config(settings or get_settings()))
    return app


app = create_app()
