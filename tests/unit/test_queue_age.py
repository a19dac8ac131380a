"""The age of the oldest waiting and the longest-running job per queue (``imgrestore_queue_oldest_*_seconds``, the
API's queue collector; ``imgrestore monitor``), against a real Redis and real kombu deliveries: jobs are queued,
retried and started at known times (the job store's clock is set), so every age checked is exact."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from kombu import Connection

import promql_parser
from services.api.observability import ApiMetrics
from services.config import Settings
from services.jobs import Job, JobError, OutputInfo, StageTimings
from services.metrics import QueueCollector
from services.monitoring import Monitor
from services.queue import job_store
from services.queue.celery_app import create_app
from services.queue.job_store import JobStore
from services.queue.submission import Submitter
from tests.deploy.support import DEPLOY

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
RESULT = OutputInfo(width=1, height=1, mode="L", format="PNG", bytes=1, megapixels=0.000001, model="m", tiles=1)


class Clock:
    """The job store's clock (``utcnow``), moved by the test."""

    def __init__(self) -> None:
        self.now = T0

    def at(self, seconds: float) -> None:
        self.now = T0 + timedelta(seconds=seconds)


class Service:
    def __init__(self, redis_url: str) -> None:
        prefix = f"age{uuid.uuid4().hex[:8]}:"
        self.settings = Settings(redis_url=redis_url, key_prefix=prefix, queue_prefix=prefix)
        self.store = JobStore.from_url(redis_url, prefix)
        self.submitter = Submitter(self.settings, self.store, create_app(self.settings))
        self.unacked_key = prefix + "unacked"
        self.connection = Connection(redis_url, transport_options={
            "unacked_key": self.unacked_key, "unacked_index_key": prefix + "unacked_index",
            "unacked_mutex_key": prefix + "unacked_mutex"})
        self.queues = [self.settings.queue_for(task) for task in ("denoise", "colorize", "watermark")]
        self.queues.append(self.settings.control_queue)

    def queue(self, task: str = "denoise") -> Job:
        job = Job(task=task, input_url="/in/a.png", output_url="/out/a.png")
        self.submitter.create_queued(job)
        return job

    def deliver(self, task: str = "denoise") -> str:
        """A worker takes the next message (unacknowledged, as with acks_late); returns its job id."""
        message = self.connection.default_channel.basic_get(self.settings.queue_for(task), no_ack=False)
        return message.headers["id"]

    def collector(self, seconds: float) -> QueueCollector:
        return QueueCollector(self.store, self.queues, self.unacked_key,
                              clock=lambda: (T0 + timedelta(seconds=seconds)).timestamp())

    def ages(self, seconds: float) -> dict[str, dict[str, float]]:
        """{gauge name: {queue: value}} as one scrape ``seconds`` after T0 reports them."""
        found: dict[str, dict[str, float]] = {}
        for family in self.collector(seconds).collect():
            if "oldest" in family.name:
                found[family.name] = {sample.labels["queue"]: sample.value for sample in family.samples}
        return found


@pytest.fixture()
def clock(monkeypatch) -> Clock:
    made = Clock()
    monkeypatch.setattr(job_store, "utcnow", lambda: made.now)
    return made


@pytest.fixture()
def service(redis_url: str):
    made = Service(redis_url)
    yield made
    made.connection.release()


WAITING = "imgrestore_queue_oldest_waiting_seconds"
RUNNING = "imgrestore_queue_oldest_running_seconds"


def test_empty_queues_report_zero(service, clock):
    assert service.ages(100) == {WAITING: dict.fromkeys(service.queues, 0.0),
                                 RUNNING: dict.fromkeys(service.queues, 0.0)}


def test_the_oldest_waiting_job_gives_the_age_of_its_queue(service, clock):
    service.queue()
    clock.at(300)
    service.queue()
    clock.at(400)
    service.queue("colorize")

    ages = service.ages(754)

    denoise, colorize, watermark = service.queues[:3]
    assert ages[WAITING] == {denoise: 754.0, colorize: 354.0, watermark: 0.0, service.settings.control_queue: 0.0}
    assert set(ages[RUNNING].values()) == {0.0}


def test_a_started_job_counts_as_running_from_its_start_and_the_next_one_waits_on(service, clock):
    first = service.queue()
    clock.at(300)
    service.queue()
    clock.at(700)
    assert service.deliver() == first.id
    service.store.start(first.id, "w@test", 60_000)

    ages = service.ages(754)

    denoise = service.queues[0]
    assert (ages[WAITING][denoise], ages[RUNNING][denoise]) == (454.0, 54.0)
    clock.at(760)
    service.store.succeed(first.id, RESULT, StageTimings(), "stub")
    assert service.ages(800)[RUNNING][denoise] == 0.0  # finished: no longer running (acknowledged or not)


def test_a_retried_job_waits_from_its_retry_not_from_its_creation(service, clock):
    job = service.queue()
    clock.at(100)
    assert service.deliver() == job.id
    service.store.start(job.id, "w@test", 60_000)
    clock.at(600)
    service.store.schedule_retry(job.id, JobError(type="storage_unavailable", message="503", transient=True))
    service.submitter.enqueue(service.store.get(job.id))  # its next message

    ages = service.ages(660)

    assert ages[WAITING][service.queues[0]] == 60.0
    assert ages[RUNNING][service.queues[0]] == 0.0  # its old delivery is no running job


def test_a_message_whose_job_already_finished_is_not_a_waiting_job(service, clock):
    done = service.queue()  # a duplicate message: its job finished through another delivery
    service.store.start(done.id, "w@test", 60_000)
    service.store.succeed(done.id, RESULT, StageTimings(), "stub")
    clock.at(500)
    service.queue()

    assert service.ages(530)[WAITING][service.queues[0]] == 30.0


def test_the_api_exports_the_ages(service, clock):
    clock.now = datetime.now(timezone.utc) - timedelta(seconds=754)
    service.queue("watermark")
    metrics = ApiMetrics(service.store, service.queues)

    age = metrics.registry.get_sample_value(WAITING, {"queue": service.settings.queue_for("watermark")})

    assert 754 <= age < 754 + 60


def test_monitor_shows_the_ages(service, clock):
    clock.now = datetime.now(timezone.utc) - timedelta(seconds=3_725)
    service.queue()
    snapshot = Monitor(service.settings, service.store, create_app(service.settings))._redis_part(8, 300)

    denoise = snapshot.queues[service.queues[0]]
    assert denoise["waiting"] == 1 and 3_725 <= denoise["oldest_waiting_s"] < 3_725 + 60
    from services.cli.monitor import age

    assert age(denoise["oldest_waiting_s"]).startswith("1h 02m")
    assert (age(0), age(42.9), age(185), age(3 * 86_400 + 4 * 3_600 + 5)) == ("–", "42s", "3m 05s", "3d 4h")


def _waiting_alert() -> tuple[float, str]:
    """The threshold (seconds) of the "jobs waiting too long" rule, and the metric it compares: the rule must have
    the shape ``max by (queue) (<metric>) > N`` for the evaluation below to be the one Prometheus makes."""
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    (rule,) = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "ImgrestoreJobsWaitingTooLong"]
    expr = promql_parser.parse(rule["expr"])
    assert str(expr.op) == ">" and str(expr.lhs.op) == "max" and expr.lhs.modifier.labels == ["queue"]
    return expr.rhs.val, expr.lhs.expr.name


@pytest.mark.parametrize("waited_minutes_past_threshold, fires", [(-1, False), (1, True)])
def test_the_waiting_alert_fires_once_a_job_waits_past_its_threshold(service, clock, waited_minutes_past_threshold,
                                                                     fires):
    threshold, metric = _waiting_alert()
    service.queue("colorize")
    service.queue()
    clock.at(threshold - 120)  # a newer job does not hide the old one

    values = service.ages(threshold + 60 * waited_minutes_past_threshold)[metric]

    firing = {queue for queue, value in values.items() if value > threshold}
    assert firing == ({service.queues[0], service.queues[1]} if fires else set())
