"""Real parts: Redis over TCP, moto's S3 server over HTTP, and imgrestore worker processes. Every test here is marked
``integration`` by tests/conftest.py (a ``pytestmark`` in a conftest would be ignored)."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest

from services.config import Settings
from services.queue.celery_app import create_app
from services.queue.job_store import JobStore
from services.queue.submission import Submitter
from tests.support.processes import start_moto, start_worker


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory):
    given = os.environ.get("IMGRESTORE_TEST_S3_ENDPOINT")
    if given:
        yield given
        return
    server = start_moto(tmp_path_factory.mktemp("moto"))
    yield server.endpoint
    server.stop()


@pytest.fixture(scope="session")
def aws_env() -> dict:
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(env)
    return env


@pytest.fixture(scope="session")
def s3_client(s3_endpoint: str, aws_env: dict):
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


@pytest.fixture()
def bucket(s3_client) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def service_env(redis_url: str, s3_endpoint: str, aws_env: dict, tiny_model_dir: Path) -> dict:
    """Environment for processes of one test module; a queue prefix of its own keeps modules apart."""
    return {
        **aws_env,
        "IMGRESTORE_REDIS_URL": redis_url,
        "IMGRESTORE_S3_ENDPOINT_URL": s3_endpoint,
        "IMGRESTORE_MODEL_DIR": str(tiny_model_dir),
        "IMGRESTORE_QUEUE_PREFIX": f"t{uuid.uuid4().hex[:8]}.",
        "IMGRESTORE_INTRA_OP_THREADS": "1",
        "IMGRESTORE_LOG_FORMAT": "json",
        "IMGRESTORE_RETRY_BACKOFF_BASE": "0.2",
        "IMGRESTORE_METRICS_PORT": "0",
    }


def settings_from(env: dict) -> Settings:
    """The Settings a process started with ``env`` reads, built without touching os.environ."""
    fields = {k.removeprefix("IMGRESTORE_").lower(): v for k, v in env.items() if k.startswith("IMGRESTORE_")}
    return Settings(**fields)


@pytest.fixture(scope="module")
def service_settings(service_env: dict) -> Settings:
    return settings_from(service_env)


@pytest.fixture(scope="module")
def celery_app(service_settings: Settings):
    return create_app(service_settings)


@pytest.fixture(scope="module")
def store(service_settings: Settings) -> JobStore:
    return JobStore.from_url(service_settings.redis_url, service_settings.key_prefix)


@pytest.fixture(scope="module")
def submitter(service_settings: Settings, store: JobStore, celery_app) -> Submitter:
    return Submitter(service_settings, store, celery_app)


@dataclass
class Service:
    """Workers on a queue prefix of their own, with the settings a test chose."""

    env: dict
    settings: Settings
    app: object
    submitter: Submitter
    log_dir: Path
    workers: list = field(default_factory=list)

    @property
    def store(self) -> JobStore:
        return self.submitter.store

    def start_worker(self, concurrency: int = 1):
        worker = start_worker(f"w{len(self.workers)}-{uuid.uuid4().hex[:6]}@test", self.env, self.log_dir,
                              concurrency=concurrency, app=self.app)
        self.workers.append(worker)
        return worker

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop(timeout=15)


@pytest.fixture()
def make_service(service_env: dict, tmp_path: Path):
    """``make_service(workers=2, IMGRESTORE_X="…")`` → a ``Service``; everything is stopped afterwards."""
    made: list[Service] = []

    def make(workers: int = 1, concurrency: int = 1, **overrides: str) -> Service:
        env = {**service_env, "IMGRESTORE_QUEUE_PREFIX": f"s{uuid.uuid4().hex[:8]}.", "IMGRESTORE_METRICS_PORT": "0",
               **overrides}
        settings = settings_from(env)
        app = create_app(settings)
        store = JobStore.from_url(settings.redis_url, settings.key_prefix)
        service = Service(env, settings, app, Submitter(settings, store, app), tmp_path)
        made.append(service)
        for _ in range(workers):
            service.start_worker(concurrency)
        return service

    yield make
    for service in made:
        service.stop()


@pytest.fixture(scope="module")
def worker(service_env: dict, celery_app, tmp_path_factory: pytest.TempPathFactory):
    process = start_worker(f"w-{uuid.uuid4().hex[:6]}@test", service_env, tmp_path_factory.mktemp("logs"),
                           app=celery_app)
    yield process
    process.stop()
