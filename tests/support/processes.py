"""Real service processes for integration tests: moto's S3 server, imgrestore workers, free ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def require_redis(url: str) -> redis.Redis:
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        raise RuntimeError(
            f"the integration tests need a real Redis at {url} (set IMGRESTORE_TEST_REDIS_URL, or run .ci/run, "
            f"which starts one): {exc}"
        ) from None
    return client


@dataclass
class MotoServer:
    endpoint: str
    process: subprocess.Popen | None = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)


def start_moto(log_dir: Path) -> MotoServer:
    """moto's standalone S3 server over real HTTP on a free loopback port."""
    port = free_port()
    log = open(log_dir / f"moto-{port}.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    wait_until(lambda: urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).status == 200, 30,
               "moto server to answer")
    return MotoServer(endpoint, process)


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen
    log_path: Path
    env: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def pool_pids(self) -> list[int]:
        """The worker's pool processes (its main process's children) as /proc lists them now; [] once it is gone."""
        try:
            return [int(p) for p in Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()]
        except FileNotFoundError:
            return []

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and its pool children), like a lost node."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)

    def stop(self, timeout: float = 30) -> None:
        if not self.alive():
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def start_worker(name: str, env: dict, log_dir: Path, concurrency: int = 1, queues: str | None = None,
                 extra_args: list[str] | None = None, app=None, ready_timeout: float = 60) -> WorkerProcess:
    """``imgrestore worker`` in its own process group; returns once it answers a Celery ping."""
    log_path = log_dir / f"worker-{name.replace('@', '_')}.log"
    args = [sys.executable, "-m", "services.cli", "worker", "--name", name, "--concurrency", str(concurrency)]
    if queues:
        args += ["--queues", queues]
    args += extra_args or []
    process = subprocess.Popen(args, env={**os.environ, **env}, cwd=REPO, stdout=open(log_path, "wb"),
                               stderr=subprocess.STDOUT, start_new_session=True)
    worker = WorkerProcess(name, process, log_path, env)
    if app is not None:
        def answers() -> bool:
            if not worker.alive():
                raise RuntimeError(f"worker {name} exited:\n{worker.log()[-3000:]}")
            return bool(app.control.ping(destination=[name], timeout=0.5))

        deadline = time.monotonic() + ready_timeout
        while not answers():
            if time.monotonic() > deadline:
                worker.kill()
                raise TimeoutError(f"worker {name} did not answer a ping:\n{worker.log()[-3000:]}")
    return worker
