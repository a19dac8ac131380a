"""The retry paths under a Redis outage (issue 15): wait for Redis with backoff, publish the next delivery, and when
Redis stays away end the process unacknowledged — never Celery's Reject(requeue=False)."""

from __future__ import annotations

from types import SimpleNamespace

import kombu.exceptions
import pytest
import redis
from celery import Celery
from celery.canvas import Signature
from celery.exceptions import Reject, Retry

from services.config import Settings
from services.job_runner import JobRunner
from services.jobs import Job
from services.queue import outages
from services.queue.job_store import StartOutcome

DOWN = redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


class FlakyRedis:
    """A client whose PING fails ``failures`` times, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.pings = 0

    def ping(self) -> bool:
        self.pings += 1
        if self.failures:
            self.failures -= 1
            raise DOWN
        return True


class Ended(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@pytest.fixture()
def no_exit(monkeypatch):
    """``abandon_delivery`` raises ``Ended`` instead of ending the test process."""
    def end(status: int) -> None:
        raise Ended(status)

    monkeypatch.setattr(outages, "_end_process", end)


def test_patiently_waits_for_redis_with_backoff_then_calls_again():
    calls = []

    def call() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise DOWN
        return "ok"

    sleeps: list[float] = []
    client = FlakyRedis(failures=3)
    assert outages.patiently(call, client, 60, "test", sleep=sleeps.append) == "ok"
    assert len(calls) == 3
    assert sleeps == sorted(sleeps) and sleeps[0] == 0.25 and sleeps[-1] > sleeps[0]  # growing backoff


def test_patiently_gives_up_after_the_outage_budget_with_an_actionable_error():
    def call() -> None:
        raise kombu.exceptions.OperationalError("Error 111 connecting")

    with pytest.raises(outages.RedisUnavailable, match="IMGRESTORE_REDIS_OUTAGE_WAIT.*IMGRESTORE_REDIS_URL"):
        outages.patiently(call, FlakyRedis(failures=10**9), 0.6, "test", sleep=lambda s: None)


def test_other_errors_are_not_taken_for_an_outage():
    def call() -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        outages.patiently(call, FlakyRedis(failures=0), 60, "test")


@pytest.fixture()
def task():
    app = Celery("outage-test", set_as_current=False)

    @app.task(bind=True, name="test.work", max_retries=None)
    def work(self, x: int) -> int:
        return x

    work.push_request(id="job-1", retries=2, args=[1], kwargs={}, called_directly=False, hostname="w@test",
                      delivery_info={"exchange": "", "routing_key": "q.denoise"})
    yield work
    work.pop_request()


def _publishes(monkeypatch, failures: int) -> list[Signature]:
    """Signature.apply_async fails ``failures`` times as kombu does when Redis is down, then succeeds."""
    sent: list[Signature] = []
    state = {"left": failures}

    def apply_async(self: Signature, *args, **kwargs) -> None:
        if state["left"]:
            state["left"] -= 1
            raise kombu.exceptions.OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        sent.append(self)

    monkeypatch.setattr(Signature, "apply_async", apply_async)
    return sent


def test_celery_retry_deletes_the_message_when_its_publish_fails(task, monkeypatch):
    """Why ``retry_task`` exists: Celery's own retry answers a failed publish with Reject(requeue=False)."""
    _publishes(monkeypatch, failures=1)
    with pytest.raises(Reject) as rejected:
        task.retry(countdown=2)
    assert rejected.value.requeue is False


def test_retry_task_publishes_after_redis_returns(task, monkeypatch):
    sent = _publishes(monkeypatch, failures=2)
    result = outages.retry_task(task, 3.0, FlakyRedis(failures=1), max_wait=60, sleep=lambda s: None)
    assert isinstance(result, Retry) and result.when == 3.0
    (signature,) = sent
    assert signature.options["retries"] == 3 and signature.options["task_id"] == "job-1"
    assert signature.options["queue"] == "q.denoise" and signature.options["countdown"] == 3.0
    assert list(signature.args) == [1]


def test_retry_task_keeps_new_arguments(task, monkeypatch):
    sent = _publishes(monkeypatch, failures=0)
    outages.retry_task(task, 0, FlakyRedis(failures=0), max_wait=60, args=[7])
    assert list(sent[0].args) == [7]


def test_retry_task_abandons_the_delivery_unacknowledged_when_redis_stays_away(task, monkeypatch, no_exit):
    _publishes(monkeypatch, failures=10**9)
    with pytest.raises(Ended) as ended:  # not Reject, not Retry: the process ends and the message stays
        outages.retry_task(task, 2.0, FlakyRedis(failures=10**9), max_wait=0.6, sleep=lambda s: None)
    assert ended.value.status == outages.EX_TEMPFAIL


class _StoreDownOnRelease:
    """A job store that starts the job, then is unreachable."""

    def __init__(self) -> None:
        self.redis = None

    def start(self, job_id: str, worker: str, lease_ms: int) -> StartOutcome:
        return StartOutcome("started", attempts=1, lost=0)

    def succeed(self, *args) -> bool:
        raise redis.exceptions.TimeoutError("Timeout reading from socket")

    def release_lease(self, job_id: str, worker: str) -> None:
        raise DOWN


class _Restorer:
    def __init__(self, exc: BaseException | None) -> None:
        self.exc = exc

    def restore(self, job, timings):
        if self.exc is not None:
            raise self.exc
        return SimpleNamespace(result=None, timings=timings, provider=None)


def _runner(exc: BaseException | None) -> JobRunner:
    runner = JobRunner.__new__(JobRunner)  # only what run() touches
    runner.settings = Settings()
    runner.store = _StoreDownOnRelease()
    runner.restorer = _Restorer(exc)
    runner.notify = None
    return runner


def test_a_cancelled_job_still_ends_its_process_when_the_lease_cannot_be_released():
    """SIGTERM from a worker cancelling the job on a connection loss must not turn into a retry of the job."""
    job = Job(task="denoise", input_url="/in.png", output_url="/out.png")
    with pytest.raises(SystemExit):
        _runner(SystemExit(-15)).run(job, "w@test")


def test_a_job_store_error_mid_job_reaches_the_task_even_when_release_fails_too():
    """The task must see the error that ended the job (to wait for Redis), not the failed lease release."""
    job = Job(task="denoise", input_url="/in.png", output_url="/out.png")
    with pytest.raises(redis.exceptions.TimeoutError):
        _runner(None).run(job, "w@test")
