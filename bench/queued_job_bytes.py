"""Redis memory per queued job (record + queue message + index entries), measured on a redis-server of its own:
``used_memory`` before and after queueing N jobs, for the submission path before issue 16 (record pipelined, then
Celery's ``send_task``) and the current one (``Submitter.create_queued``: one script, lighter message).
Usage: python bench/queued_job_bytes.py [--jobs 5000]"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import redis

from common import markdown_table, write_results  # noqa: E402

from services.config import Settings  # noqa: E402
from services.jobs import Job, JobRequest, Task  # noqa: E402
from services.queue.celery_app import RESTORE_TASK, send  # noqa: E402
from services.queue.clients import QueueClients  # noqa: E402
from services.queue.submission import Submitter  # noqa: E402
from tests.support.chaos import RedisServer  # noqa: E402


def _request(i: int) -> JobRequest:
    # A typical API submission: an S3 page in, the derived output next to it.
    return JobRequest(task=Task.denoise, profile="document", input_url=f"s3://scans/2019/box-{i // 100:04d}/page-{i:06d}.png",
                      output_url=f"s3://scans/2019/box-{i // 100:04d}/restored/denoise-document/page-{i:06d}.png")


def _before(submitter: Submitter, job: Job) -> None:
    """The path issue 16 replaced: the record (written as today's, so only the message differs from the first
    figures), then Celery's publish (argsrepr repeats the job)."""
    submitter.store.create(job)
    send(submitter.app, RESTORE_TASK, [job.model_dump(mode="json")], submitter.settings.queue_for(job.task.value),
         job.id)


def _after(submitter: Submitter, job: Job) -> None:
    submitter.create_queued(job)


def measure(path: str, jobs: int, folder: Path) -> dict:
    server = RedisServer(folder / path, options=("--appendonly", "no"))
    server.start()
    try:
        settings = Settings(redis_url=server.url, queue_prefix="bench.", max_queued_jobs=0)
        queue = QueueClients.from_settings(settings)
        store, submitter = queue.jobs, queue.submitter
        client = redis.Redis.from_url(server.url, decode_responses=True)
        submit = _before if path == "before" else _after
        submit(submitter, Job.from_request(_request(-1), owner="ops"))  # connections, scripts, kombu bindings
        start = client.info("memory")["used_memory"]
        started = time.perf_counter()
        for i in range(jobs):
            submit(submitter, Job.from_request(_request(i), owner="ops"))
        seconds = time.perf_counter() - started
        used = client.info("memory")["used_memory"] - start
        queue = settings.queue_for("denoise")
        sample = client.lrange(queue, 0, 99)
        ids = client.zrevrange(store.recent_key, 0, 99)
        record = statistics.mean(client.memory_usage(store.job_key(i)) or 0 for i in ids)
        return {"path": path, "jobs": jobs, "bytes_per_job": round(used / jobs),
                "gb_per_million": round(used / jobs * 1e6 / 1e9, 2),
                "message_bytes": round(statistics.mean(len(m) for m in sample)),
                "record_bytes": round(record), "submissions_per_s": round(jobs / seconds)}
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=5000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="imgrestore-bytes-"))
    rows = [measure(path, args.jobs, folder) for path in ("before", "after")]  # before: Celery's own message
    print(markdown_table(rows))
    write_results("queued_job_bytes", "Redis memory per queued job", {"rows": rows}, [
        ("Bytes of Redis per queued job (used_memory delta / jobs; message = its JSON length, record = MEMORY "
         "USAGE of the job hash)", markdown_table(rows))])


if __name__ == "__main__":
    main()
