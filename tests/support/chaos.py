"""Faults together, on a schedule drawn from a seed: worker SIGKILLs, Redis SIGKILL + restart on its AOF, S3 faults
through ``FaultyProxy`` — over a real backfill on real workers. Used by ``bench/chaos.py`` (≥ 300 pages, several
seeds) and by a bounded test in the suite. Counts what matters: succeeded, failed, lost (unfinished with no message
and no lease: nothing will ever finish it), stuck (unfinished otherwise), counted twice, attempts > 1."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import boto3
import numpy as np
import redis
from PIL import Image

from services.backfill import BackfillPlan
from services.config import Settings
from services.jobs import Task
from services.queue import depth
from services.queue.batch_store import BatchStore
from services.queue.job_store import JobStore
from tests.support.faulty_proxy import FaultyProxy
from tests.support.processes import REPO, WorkerProcess, free_port, start_worker, wait_until

AWS = {"AWS_ACCESS_KEY_ID": "chaos", "AWS_SECRET_ACCESS_KEY": "chaos", "AWS_DEFAULT_REGION": "us-east-1"}
# Tight S3 timeouts so injected delays and resets turn into retries quickly (as in tests/integration/test_faults.py).
S3_UNDER_FAULTS = {"IMGRESTORE_S3_READ_TIMEOUT": "2", "IMGRESTORE_S3_CONNECT_TIMEOUT": "1",
                   "IMGRESTORE_S3_RETRY_MODE": "standard", "IMGRESTORE_S3_MAX_ATTEMPTS": "3",
                   "IMGRESTORE_MAX_RETRIES": "8", "IMGRESTORE_RETRY_BACKOFF_BASE": "0.2",
                   "IMGRESTORE_RETRY_BACKOFF_MAX": "5"}


class RedisServer:
    """redis-server with AOF (everysec) in a folder of its own, that can be SIGKILLed and started again on it."""

    def __init__(self, folder: Path, port: int | None = None, options: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        self.folder = folder
        self.options = options  # more redis-server arguments, e.g. ("--maxmemory", "2mb")
        folder.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--appendonly", "yes",
                "--appendfsync", "everysec", "--save", "", "--dir", str(self.folder),
                "--maxmemory-policy", "noeviction", "--logfile", str(self.folder / "redis.log"), *self.options]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: redis.Redis(port=self.port).ping(), 30, "redis-server to answer")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the backfill started
    kind: str  # "kill_worker" or "redis_outage"
    seconds: float = 0.0  # Redis downtime, or how long the killed worker stays down


def schedule(seed: int, horizon: float, kills: int, outages: int, min_down: float = 2.0,
             max_down: float = 15.0) -> list[Fault]:
    """The seeded fault plan: ``kills`` worker SIGKILLs and ``outages`` Redis outages within ``horizon`` seconds."""
    rng = random.Random(seed)
    faults = [Fault(round(rng.uniform(0.1, 0.9) * horizon, 2), "kill_worker", round(rng.uniform(1.0, 3.0), 2))
              for _ in range(kills)]
    start = 0.0
    for _ in range(outages):  # outages never overlap: each starts after the previous one ended
        at = max(start, rng.uniform(0.15, 0.85) * horizon)
        down = round(rng.uniform(min_down, max_down), 2)
        faults.append(Fault(round(at, 2), "redis_outage", down))
        start = at + down + 3.0
    return sorted(faults, key=lambda f: f.at)


@dataclass
class ChaosResult:
    seed: int
    pages: int
    faults: list[dict]
    seconds: float
    backfill_exit: int | None
    succeeded: int = 0
    failed: int = 0
    lost: int = 0
    stuck: int = 0
    counted_twice: int = 0
    outputs: int = 0
    attempts_over_1: int = 0
    lost_deliveries: int = 0
    interrupted: int = 0
    orphans_requeued: int = 0
    retries: int = 0
    s3_faults: dict = field(default_factory=dict)
    unfinished: list[dict] = field(default_factory=list)

    def ok(self) -> bool:
        return self.lost == 0 and self.stuck == 0 and self.counted_twice == 0 and self.succeeded == self.pages

    def as_dict(self) -> dict:
        return asdict(self)


def page(seed: int, size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((size, size)) * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def upload_pages(s3_endpoint: str, bucket: str, prefix: str, count: int) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="chaos",
                      aws_secret_access_key="chaos")
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"{prefix}{i:04d}.png", Body=page(i)), range(count)))


class ChaosRun:
    def __init__(self, work: Path, s3_endpoint: str, model_dir: Path, bucket: str, source_prefix: str, pages: int,
                 workers: int = 2, overrides: dict | None = None, s3_fault_fraction: float = 0.10,
                 seed: int = 0) -> None:
        self.work = work
        self.s3_endpoint = s3_endpoint
        self.bucket = bucket
        self.source = f"s3://{bucket}/{source_prefix}"
        self.pages = pages
        self.worker_count = workers
        self.seed = seed
        self.redis = RedisServer(work / "redis")
        self.proxy = FaultyProxy(s3_endpoint, delay=1.5, seed=seed)
        self.s3_fault_fraction = s3_fault_fraction
        self.output = f"s3://{bucket}/out-{uuid.uuid4().hex[:8]}/"
        self.env = {**AWS, **S3_UNDER_FAULTS, "IMGRESTORE_MODEL_DIR": str(model_dir),
                    "IMGRESTORE_QUEUE_PREFIX": "chaos.", "IMGRESTORE_INTRA_OP_THREADS": "1",
                    "IMGRESTORE_METRICS_PORT": "0", "IMGRESTORE_LOG_LEVEL": "INFO", **(overrides or {})}
        self.workers: list[WorkerProcess] = []
        self.log: list[str] = []
        self._started = 0.0

    def note(self, text: str) -> None:
        line = f"{time.monotonic() - self._started:7.2f}s {text}"
        self.log.append(line)
        print(line, flush=True)

    def _worker(self) -> WorkerProcess:
        name = f"c{len(self.workers)}-{uuid.uuid4().hex[:4]}@chaos"
        worker = start_worker(name, self.worker_env, self.work)
        self.workers.append(worker)
        return worker

    def run(self, faults: list[Fault], timeout: float = 900.0) -> ChaosResult:
        self.redis.start()
        self.proxy.start()
        self.worker_env = {**self.env, "IMGRESTORE_REDIS_URL": self.redis.url,
                           "IMGRESTORE_S3_ENDPOINT_URL": self.proxy.endpoint}
        # The backfill lists S3 directly, without injected faults: the workers' tight timeouts (made to turn injected
        # delays into retries) would only fail its listing on a busy machine (a 1 000-key page took > 2 s here).
        backfill_env = {**{k: v for k, v in self.env.items() if k not in S3_UNDER_FAULTS},
                        "IMGRESTORE_REDIS_URL": self.redis.url, "IMGRESTORE_S3_ENDPOINT_URL": self.s3_endpoint}
        try:
            for _ in range(self.worker_count):
                self._worker()
            wait_until(lambda: all("ready." in w.log() for w in self.workers), 120, "workers to start")
            self.proxy.fraction = self.s3_fault_fraction
            self._started = time.monotonic()
            command = [sys.executable, "-m", "services.cli", "backfill", "--task", "denoise", self.source,
                       "--output", self.output, "--max-in-flight", "50", "--report", str(self.work / "failures.jsonl")]
            backfill = subprocess.Popen(command, env={**os.environ, **backfill_env}, cwd=REPO,
                                        stdout=open(self.work / "backfill.out", "w"),
                                        stderr=open(self.work / "backfill.err", "w"), start_new_session=True)
            done = threading.Event()
            injector = threading.Thread(target=self._inject, args=(faults, done, backfill), daemon=True)
            injector.start()
            try:
                code = backfill.wait(timeout)
            except subprocess.TimeoutExpired:
                code = None
                os.killpg(backfill.pid, 9)
            done.set()
            injector.join(60)
            seconds = time.monotonic() - self._started
            self.note(f"backfill ended: exit {code}")
            return self._count(faults, seconds, code)
        finally:
            for worker in self.workers:
                worker.stop(timeout=20)
            self.proxy.stop()
            self.redis.stop()

    def _inject(self, faults: list[Fault], done: threading.Event, backfill: subprocess.Popen) -> None:
        rng = random.Random(self.seed + 1)
        for fault in faults:
            if done.wait(max(0.0, fault.at - (time.monotonic() - self._started))) or backfill.poll() is not None:
                self.note(f"run over before {fault.kind} at {fault.at:.1f}s")
                return
            if fault.kind == "kill_worker":
                alive = [w for w in self.workers if w.alive()]
                victim = rng.choice(alive)
                victim.kill()
                self.note(f"SIGKILL {victim.name}; a new worker in {fault.seconds:.1f}s")
                time.sleep(fault.seconds)
                self._worker()
            elif fault.kind == "redis_outage":
                self.redis.kill()
                self.note(f"Redis SIGKILLed, down {fault.seconds:.1f}s")
                time.sleep(fault.seconds)
                self.redis.start()
                self.note("Redis back (AOF)")

    def _count(self, faults: list[Fault], seconds: float, code: int | None) -> ChaosResult:
        settings = Settings(redis_url=self.redis.url, queue_prefix=self.env["IMGRESTORE_QUEUE_PREFIX"])
        store = JobStore.from_url(self.redis.url, settings.key_prefix)
        batches = BatchStore(store)
        plan = BackfillPlan(task=Task.denoise, source=self.source, output=self.output)
        result = ChaosResult(self.seed, self.pages, [asdict(f) for f in faults], round(seconds, 1), code)
        ids = batches.job_ids(plan.backfill_id)
        jobs = store.get_many(ids)
        finished = [j for j in jobs if j.state.finished]
        result.succeeded = sum(1 for j in jobs if j.state.value == "succeeded")
        result.failed = sum(1 for j in jobs if j.state.value == "failed")
        names = [settings.queue_for(t.value) for t in Task] + [settings.control_queue]
        with_messages = depth.task_ids_with_messages(store.redis, names)
        for job in jobs:
            if job.state.finished:
                continue
            held = bool(store.redis.exists(store.lease_key(job.id)))
            if job.id in with_messages or held:
                result.stuck += 1
            else:
                result.lost += 1
            result.unfinished.append({"id": job.id, "state": job.state.value, "attempts": job.attempts,
                                      "message": job.id in with_messages, "lease": held})
        # Inputs never queued (a listing that stopped) are lost work too.
        result.lost += max(0, self.pages - len(ids))
        batch = batches.get(plan.backfill_id)
        counted = sum(store.finished_counts().values())  # a fresh Redis: every finish of every job
        result.counted_twice = max(0, counted - len(finished), batch.succeeded + batch.failed - len(finished))
        result.attempts_over_1 = sum(1 for j in jobs if j.attempts > 1)
        result.lost_deliveries = sum(j.lost for j in jobs)
        result.interrupted = sum(j.interrupted for j in jobs)
        result.orphans_requeued = store.recovery_counts()["orphans_requeued"]
        result.retries = sum(j.retries for j in jobs)
        result.s3_faults = {k: v for k, v in self.proxy.counts.items() if k != "ok"}
        s3 = boto3.client("s3", endpoint_url=self.s3_endpoint, region_name="us-east-1",
                          aws_access_key_id="chaos", aws_secret_access_key="chaos")
        bucket, prefix = self.output[5:].split("/", 1)
        result.outputs = sum(len(p.get("Contents", [])) for p in
                             s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix))
        return result
