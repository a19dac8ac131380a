"""Per-job time limits (issue 11, finding 9): the limit's computation, the clock, the hard-limit watchdog and the
in-process path (``imgrestore run``: a job over its limit fails with the reason and writes nothing)."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

from services.config import Settings
from services.errors import ImageDecodeError
from services.imaging.codecs import decode
from services.jobs import Job
from services.restorer import Restorer, attempt
from services.time_limits import HardLimitWatchdog, JobClock, JobTimeLimitError, TimeLimits


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limit_is_a_base_plus_seconds_per_megapixel_and_the_hard_limit_a_grace_later():
    limits = TimeLimits(base=60.0, per_megapixel=10.0, hard_grace=30.0)
    assert limits.soft_seconds(0.0) == 60.0
    assert limits.soft_seconds(8.4) == pytest.approx(144.0)
    assert limits.hard_seconds(8.4) == pytest.approx(174.0)
    assert TimeLimits.from_settings(Settings(job_time_limit_base=5, job_time_limit_per_megapixel=2,
                                             job_time_limit_hard_grace=7)) == TimeLimits(5.0, 2.0, 7.0)
    defaults = TimeLimits.from_settings(Settings())
    assert defaults.enabled and defaults.soft_seconds(100.0) == 60.0 + 10.0 * 100.0  # README's figures


def test_the_clock_fails_a_job_past_its_limit_with_the_reason_and_the_settings_named():
    now = FakeTime()
    clock = JobClock(TimeLimits(base=2.0, per_megapixel=1.0, hard_grace=5.0), now=now)
    now.now += 1.9
    clock.check("decode")  # within the base
    clock.count(3.0)  # 3 MP decoded: 5 s in all
    now.now += 3.0
    clock.check("infer")  # 4.9 s ≤ 5 s
    assert not clock.over_hard_limit()
    now.now += 0.2
    with pytest.raises(JobTimeLimitError) as info:
        clock.check("infer")
    assert info.value.code == "time_limit_exceeded" and not info.value.transient
    assert "ran 5.1 s, over its time limit of 5.0 s" in info.value.message
    assert "IMGRESTORE_JOB_TIME_LIMIT_BASE" in info.value.message and "at infer" in info.value.message
    now.now += 5.0
    assert clock.over_hard_limit()  # 10.1 s > 5 + 5


def test_model_loading_is_not_counted_and_zero_turns_the_limits_off():
    now = FakeTime()
    clock = JobClock(TimeLimits(base=1.0, per_megapixel=0.0, hard_grace=1.0), now=now)
    with clock.paused():
        now.now += 50.0
        assert clock.elapsed() == 0.0 and not clock.over_hard_limit()
    now.now += 0.5
    clock.check("infer")
    assert clock.elapsed() == pytest.approx(0.5)
    off = JobClock(TimeLimits(base=0.0, per_megapixel=10.0, hard_grace=1.0), now=now)
    now.now += 10_000
    off.check("infer")
    assert not off.over_hard_limit()


def test_the_watchdog_reports_a_job_stuck_past_its_hard_limit_once_and_never_a_finished_one():
    now = FakeTime()
    expired: list[tuple[str, str]] = []
    fired = threading.Event()

    def on_expiry(job: Job, clock: JobClock) -> None:
        expired.append((job.id, clock.hard_limit_error().code))
        fired.set()

    watchdog = HardLimitWatchdog(on_expiry, interval=0.01)
    limits = TimeLimits(base=1.0, per_megapixel=0.0, hard_grace=1.0)
    done = Job(task="denoise", input_url="memory://a", output_url="memory://b")
    with watchdog.watching(done, JobClock(limits, now=now)):
        pass
    now.now += 100.0  # a finished job is no longer watched, however long the process then idles
    assert not fired.wait(0.2)
    stuck = Job(task="denoise", input_url="memory://c", output_url="memory://d")
    with watchdog.watching(stuck, JobClock(limits, now=now)):
        now.now += 2.5  # past 1 + 1 s without returning
        assert fired.wait(5.0)
    assert expired == [(stuck.id, "time_limit_exceeded")]


def _page(path, side: int) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(200, 256, (side, side), dtype=np.uint8)).save(path)


def test_in_process_a_job_over_its_limit_fails_with_the_reason_and_writes_nothing(tmp_path, tiny_model_dir):
    _page(tmp_path / "in.png", 256)
    job = Job(task="denoise", profile="document", input_url=str(tmp_path / "in.png"),
              output_url=str(tmp_path / "out.png"))
    # A limit no job can meet: it fails at its first check (after the download), as `imgrestore run` reports it.
    tight = Restorer(Settings(model_dir=tiny_model_dir, job_time_limit_base=1e-9, job_time_limit_per_megapixel=0))
    failed = attempt(tight, job)
    assert failed.error is not None and failed.error.type == "time_limit_exceeded"
    assert not (tmp_path / "out.png").exists()
    # Within the (default) limits the same job succeeds: the next file of a run is untouched.
    assert attempt(Restorer(Settings(model_dir=tiny_model_dir)), job).succeeded
    assert (tmp_path / "out.png").exists()


def test_a_333_byte_jpeg_declaring_10000_squared_is_refused_not_filled():
    """Finding 9's input: a JPEG header claiming 100 MP and almost no data. Refused as truncated (not grey filler
    handed to the model): the time limit never has to catch it."""
    small = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (16, 16), dtype=np.uint8)).save(small, "JPEG")
    data = bytearray(small.getvalue())
    sof = data.index(b"\xff\xc0")  # baseline frame header: marker (2), length (2), precision (1), height (2), width (2)
    data[sof + 5:sof + 9] = (10_000).to_bytes(2, "big") * 2
    bomb = bytes(data[:333])  # every header whole (scan starts at byte 318), then 15 bytes of entropy-coded data
    assert data.index(b"\xff\xda") < 333 - 12
    assert len(bomb) == 333 and Image.open(io.BytesIO(bomb)).size == (10_000, 10_000)
    with pytest.raises(ImageDecodeError, match=r"^corrupt or truncated JPEG data"):
        decode(bomb, max_pixels=100_000_000)
