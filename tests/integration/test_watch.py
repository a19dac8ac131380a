"""`imgrestore watch`: real files appearing in a real folder (and real keys under a prefix of moto's S3 server)
while the command runs as its own process; restarts, Ctrl-C and kills included."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.processes import REPO, wait_until


def _png(seed: int, size: int = 24) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((size, size)) * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


class WatchProcess:
    def __init__(self, env: dict, cwd: Path, *args: str) -> None:
        self.log = cwd / f"watch-{time.monotonic_ns()}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "watch", *args], cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(REPO), **env},  # this checkout's code, from a temporary folder
            stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"), start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        os.killpg(self.process.pid, sig)

    def stop(self, timeout: float = 60) -> int:
        """Ctrl-C, as a terminal sends it (to the process group), and the exit status."""
        self.signal(signal.SIGINT)
        return self.process.wait(timeout)

    def wait(self, timeout: float = 300) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            raise AssertionError(f"watch still running after {timeout} s:\n{self.output()[-3000:]}")


@pytest.fixture()
def embedded_env(tiny_model_dir) -> dict:
    return {"IMGRESTORE_MODEL_DIR": str(tiny_model_dir), "IMGRESTORE_INTRA_OP_THREADS": "1",
            "IMGRESTORE_LOG_FORMAT": "text"}


def _records(state_file: Path) -> list[dict]:
    return [json.loads(line) for line in state_file.read_text().splitlines()]


def _images(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")}


def test_a_live_folder_slow_writers_bursts_temp_names_and_a_corrupt_page(tmp_path, embedded_env):
    inbox, out, done, failed = (tmp_path / n for n in ("inbox", "out", "done", "failed"))
    inbox.mkdir()
    report = tmp_path / "failures.jsonl"
    watch = WatchProcess(embedded_env, tmp_path, "--task", "denoise", "--profile", "document", str(inbox),
                         "--output", str(out), "--move-done", str(done), "--move-failed", str(failed),
                         "--report", str(report), "--settle", "1")
    try:
        wait_until(lambda: "watch wt-" in watch.output(), 60, "watch to start")
        assert "filesystem events" in watch.output()

        # A scanner writing one page slowly: six chunks, 0.4 s apart (less than the 1 s settle time).
        page = _png(7, 256)
        with open(inbox / "slow.png", "wb") as fh:
            for i in range(6):
                fh.write(page[i * len(page) // 6:(i + 1) * len(page) // 6])
                fh.flush()
                time.sleep(0.4)
        # A sync tool's temporary name, renamed once whole; names that are never taken.
        (inbox / "synced.png.part").write_bytes(_png(8))
        (inbox / "synced.png.part").rename(inbox / "synced.png")
        (inbox / "~$lock.png").write_bytes(_png(9))
        (inbox / ".hidden.png").write_bytes(_png(10))
        (inbox / "sub").mkdir()
        (inbox / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
        # A burst of 200 pages.
        for i in range(200):
            (inbox / f"burst-{i:03d}.png").write_bytes(_png(100 + i))

        wait_until(lambda: len(_images(out)) >= 202 and report.exists(), 240,
                   "202 outputs and the failure report", interval=0.5)
        wait_until(lambda: not (inbox / "synced.png").exists(), 30, "the last move")
        assert watch.stop() == 0, watch.output()[-3000:]
    finally:
        if watch.process.poll() is None:
            watch.signal(signal.SIGKILL)

    log = watch.output()
    assert _images(out) == {"slow.png", "synced.png"} | {f"burst-{i:03d}.png" for i in range(200)}, log[-2000:]
    assert Image.open(out / "slow.png").size == (256, 256)  # taken whole, not half written
    assert not list(out.rglob("*.part")) and not list(tmp_path.rglob(".*.part"))
    assert _images(done) == _images(out)  # every restored input moved out of the inbox
    assert _images(failed) == {"sub/broken.png"}
    assert _images(inbox) == {"~$lock.png"} and (inbox / ".hidden.png").exists()  # never taken
    failures = [json.loads(line) for line in report.read_text().splitlines()]
    assert [(Path(f["input"]).name, f["type"]) for f in failures] == [("broken.png", "image_decode")]
    assert "seen 203, 202 restored, 1 failed" in log, log[-2000:]
    (state_file,) = out.glob(".imgrestore-wt-*.jsonl")
    finished = Counter(r["input"] for r in _records(state_file) if r["state"] != "started" and not r["moved_to"])
    assert len(finished) == 203 and set(finished.values()) == {1}  # each input restored once


def test_restarts_after_ctrl_c_and_a_kill_restore_each_input_once(tmp_path, embedded_env):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    count = 60
    for i in range(count):
        (inbox / f"p{i:03d}.png").write_bytes(_png(i, 160))
    args = ["--task", "watermark", str(inbox), "--output", str(out), "--settle", "0.3", "--polling"]

    # 1. Ctrl-C in the middle: the page in hand is finished, nothing is left half-written, exit 0.
    first = WatchProcess(embedded_env, tmp_path, *args)
    wait_until(lambda: len(_images(out)) >= 10, 120, "10 outputs of the first run", interval=0.05)
    assert first.stop() == 0, first.output()[-2000:]
    assert "stopping after the image in hand" in first.output()
    assert not list(tmp_path.rglob("*.part"))
    after_first = {name: (out / name).stat().st_mtime_ns for name in _images(out)}
    assert len(after_first) < count

    # 2. A kill in the middle: no chance to clean up.
    second = WatchProcess(embedded_env, tmp_path, *args)
    wait_until(lambda: len(_images(out)) >= len(after_first) + 10, 120, "10 more outputs", interval=0.05)
    second.signal(signal.SIGKILL)
    second.wait(10)
    assert "polling" in second.output()

    # 3. Run once more until everything there is done.
    third = WatchProcess(embedded_env, tmp_path, *args, "--once")
    assert third.wait() == 0, third.output()[-2000:]
    assert _images(out) == {f"p{i:03d}.png" for i in range(count)}
    for name, mtime in after_first.items():  # what the first run restored was not restored again
        assert (out / name).stat().st_mtime_ns == mtime, name
    (state_file,) = out.glob(".imgrestore-wt-*.jsonl")
    restored = Counter(r["input"] for r in _records(state_file) if r["state"] == "succeeded")
    assert restored == {str(inbox / f"p{i:03d}.png"): 1 for i in range(count)}  # compacted at each start
    assert not list(tmp_path.rglob("*.part"))
    match = [line for line in third.output().splitlines() if "done by earlier runs" in line]
    assert match and f"{count} restored" not in match[0], third.output()[-2000:]


def test_an_s3_prefix_polled_in_pages_with_a_cursor(tmp_path, embedded_env, service_env, s3_client, bucket):
    env = {**service_env, **embedded_env, "IMGRESTORE_WATCH_S3_PAGE_SIZE": "4",
           "IMGRESTORE_WATCH_RESCAN_INTERVAL": "2"}
    for i in range(10):
        s3_client.put_object(Bucket=bucket, Key=f"inbox/m{i:02d}.png", Body=_png(i))
    s3_client.put_object(Bucket=bucket, Key="inbox/broken.png", Body=b"<html>502</html>")
    s3_client.put_object(Bucket=bucket, Key="inbox/upload.png.part", Body=_png(50))
    s3_client.put_object(Bucket=bucket, Key="inbox/.hidden.png", Body=_png(51))
    state_file = tmp_path / "watch-state.jsonl"
    args = ["--task", "denoise", f"s3://{bucket}/inbox/", "--output", f"s3://{bucket}/clean/",
            "--move-failed", f"s3://{bucket}/failed/", "--state-file", str(state_file), "--poll-interval", "0.3",
            "--report", str(tmp_path / "failures.jsonl")]

    def keys(prefix: str) -> set[str]:
        listing = s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix)
        return {o["Key"][len(prefix):] for o in listing.get("Contents", [])}

    watch = WatchProcess(env, tmp_path, *args)
    try:
        wait_until(lambda: len(keys("clean/")) == 10, 120, "the first 10 outputs", interval=0.3)
        # New pages: after the cursor (the next poll finds them) and before it (the periodic relist does).
        for name in ("z-late.png", "a-early.png", "m05b.png"):
            s3_client.put_object(Bucket=bucket, Key=f"inbox/{name}", Body=_png(len(name)))
        wait_until(lambda: len(keys("clean/")) == 13, 60, "the 3 late pages", interval=0.3)
        assert watch.stop() == 0, watch.output()[-2000:]
    finally:
        if watch.process.poll() is None:
            watch.signal(signal.SIGKILL)
    expected = {f"m{i:02d}.png" for i in range(10)} | {"z-late.png", "a-early.png", "m05b.png"}
    assert keys("clean/") == expected
    assert keys("failed/") == {"broken.png"} and "broken.png" not in keys("inbox/")
    assert "seen 14, 13 restored, 1 failed" in watch.output(), watch.output()[-2000:]

    # Restarted: nothing is restored twice.
    again = WatchProcess(env, tmp_path, *args, "--once")
    assert again.wait() == 0, again.output()[-2000:]
    assert "seen 0, 0 restored, 0 failed" in again.output() and "(14 done by earlier runs)" in again.output()


def test_queued_watch_hands_each_page_to_the_workers(tmp_path, make_service):
    service = make_service(workers=1)
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    for i in range(5):
        (inbox / f"q{i}.png").write_bytes(_png(i))
    (inbox / "broken.jpg").write_bytes(b"not a jpeg")
    report = tmp_path / "failures.jsonl"
    args = ["--task", "denoise", str(inbox), "--output", str(out), "--queue", "--settle", "0.3", "--once",
            "--report", str(report)]
    watch = WatchProcess(service.env, tmp_path, *args)
    assert watch.wait() == 1, watch.output()[-2000:]  # one input failed
    assert _images(out) == {f"q{i}.png" for i in range(5)}
    (failure,) = [json.loads(line) for line in report.read_text().splitlines()]
    assert failure["input"].endswith("broken.jpg") and failure["type"] == "image_decode"
    job = service.store.get(failure["job_id"])
    assert job.worker and job.state.value == "failed"  # a worker process ran it, not this one

    again = WatchProcess(service.env, tmp_path, *args)  # restarted: nothing queued twice
    assert again.wait() == 0, again.output()[-2000:]
    assert "seen 0, 0 restored" in again.output() and "(6 done by earlier runs)" in again.output()
