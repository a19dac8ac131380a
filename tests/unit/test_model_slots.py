"""Model slots (issue 12): the model step of a worker's pool processes takes turns, the other stages do not.

Real processes and a real ``Restorer`` on the tiny models: a slot excludes other processes and threads, is released
by an error and by the death of its holder (SIGKILL), and only the model step waits for it — a job whose input cannot
be read or decoded fails without taking a turn, a model error fails its own job and frees the slot for the next."""

from __future__ import annotations

import io
import multiprocessing
import os
import signal
import threading

import numpy as np
import pytest
from PIL import Image

from services.config import Settings
from services.errors import ImageDecodeError, InferenceError
from services.inference.registry import ModelRegistry
from services.inference.slots import ModelSlots
from services.jobs import Job, StageTimings
from services.restorer import Restorer

FORK = multiprocessing.get_context("fork")
GENEROUS = 30.0  # seconds a test waits for something that must happen (never a speed bound)


def _hold_until_told(slots: ModelSlots, held, release) -> None:
    with slots.turn():
        held.set()
        release.wait(GENEROUS)


def _taker(slots: ModelSlots) -> tuple[threading.Thread, threading.Event]:
    """A thread that takes a turn and says so."""
    got = threading.Event()

    def take() -> None:
        with slots.turn():
            got.set()

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    return thread, got


@pytest.fixture()
def holder(tmp_path):
    """A process holding slot 0 of one slot until told; killed afterwards if still alive."""
    slots = ModelSlots(tmp_path / "slots", 1)
    held, release = FORK.Event(), FORK.Event()
    process = FORK.Process(target=_hold_until_told, args=(slots, held, release), daemon=True)
    process.start()
    assert held.wait(GENEROUS)
    yield slots, process, release
    if process.exitcode is None:  # never notify a dead waiter: multiprocessing's notify_all would wait for it
        release.set()
        process.join(GENEROUS)
    if process.is_alive():
        process.kill()


def test_a_slot_excludes_another_process_until_it_is_released(holder):
    slots, process, release = holder
    thread, got = _taker(slots)
    assert not got.wait(0.3)  # the other process holds the only slot
    release.set()
    assert got.wait(GENEROUS)
    thread.join(GENEROUS)


def test_a_killed_holder_never_keeps_the_slot(holder):
    """A pool process SIGKILLed mid-inference (OOM killer, hard time limit): the kernel drops its lock."""
    slots, process, _ = holder
    thread, got = _taker(slots)
    assert not got.wait(0.3)
    os.kill(process.pid, signal.SIGKILL)
    process.join(GENEROUS)
    assert got.wait(GENEROUS)
    thread.join(GENEROUS)


def test_threads_of_one_process_take_turns_too(tmp_path):
    slots = ModelSlots(tmp_path / "slots", 1)
    with slots.turn():
        thread, got = _taker(slots)
        assert not got.wait(0.3)
    assert got.wait(GENEROUS)
    thread.join(GENEROUS)


def test_an_error_in_the_model_step_releases_the_slot(tmp_path):
    slots = ModelSlots(tmp_path / "slots", 1)
    with pytest.raises(RuntimeError):
        with slots.turn():
            raise RuntimeError("model failed")
    with slots.turn() as waited:  # blocks for ever if the failure had kept the lock
        assert waited >= 0


def test_two_slots_admit_two_holders_and_not_a_third(tmp_path):
    slots = ModelSlots(tmp_path / "slots", 2)
    with slots.turn(), slots.turn():
        thread, got = _taker(slots)
        assert not got.wait(0.3)
    assert got.wait(GENEROUS)
    thread.join(GENEROUS)


def test_zero_slots_is_refused_with_a_clear_message(tmp_path):
    with pytest.raises(ValueError, match="at least 1"):
        ModelSlots(tmp_path, 0)


class CountingSlots(ModelSlots):
    """Real slots that count the turns taken."""

    def __init__(self, directory, count: int) -> None:
        super().__init__(directory, count)
        self.turns = 0

    def turn(self):
        self.turns += 1
        return super().turn()


def _png(path, seed: int = 0) -> str:
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((40, 50)) * 255).astype(np.uint8)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())
    return str(path)


@pytest.fixture()
def restorer(tiny_model_dir, tmp_path) -> Restorer:
    settings = Settings(model_dir=tiny_model_dir, intra_op_threads=1)
    return Restorer(settings, registry=ModelRegistry(tiny_model_dir, intra_op_threads=1),
                    model_slots=CountingSlots(tmp_path / "slots", 1))


def _job(tmp_path, input_url: str, name: str = "out.png") -> Job:
    return Job(task="denoise", profile="document", input_url=input_url, output_url=str(tmp_path / name))


def test_a_job_takes_one_turn_and_its_wait_is_kept_out_of_infer(restorer, tmp_path):
    timings = StageTimings()
    outcome = restorer.restore(_job(tmp_path, _png(tmp_path / "in.png")), timings)
    assert restorer.model_slots.turns == 1
    assert outcome.result.width == 50 and (tmp_path / "out.png").is_file()
    assert timings.model_wait is not None and timings.infer is not None
    assert all(getattr(timings, s) is not None for s in ("download", "decode", "encode", "upload"))


def test_a_job_that_cannot_be_decoded_fails_without_taking_a_turn(restorer, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    with pytest.raises(ImageDecodeError):
        restorer.restore(_job(tmp_path, str(tmp_path / "bad.png")))
    assert restorer.model_slots.turns == 0


def test_a_model_error_fails_its_job_only_and_frees_the_slot_for_the_next(restorer, tmp_path):
    model = restorer.registry.load(restorer.registry.resolve("denoise", "document"))
    working_run = model.run

    def broken(batch):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    model.run = broken
    timings = StageTimings()
    with pytest.raises(InferenceError, match="illegal memory access"):
        restorer.restore(_job(tmp_path, _png(tmp_path / "a.png")), timings)
    assert timings.infer is not None and timings.encode is None  # the record shows where it failed

    model.run = working_run
    with restorer.model_slots.turn():  # free again: a held lock would block here for ever
        pass
    outcome = restorer.restore(_job(tmp_path, _png(tmp_path / "b.png", 1), "b-out.png"))
    assert outcome.result.width == 50 and restorer.model_slots.turns == 3
