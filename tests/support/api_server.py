"""``imgrestore api`` as a real uvicorn process on a free loopback port, for HTTP-level tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import REPO, free_port, wait_until


@dataclass
class ApiServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


def start_api(env: dict, log_dir: Path, name: str = "api") -> ApiServer:
    """Returns once ``/healthz`` answers; the process logs (JSON) to ``<log_dir>/<name>-<port>.log``."""
    port = free_port()
    log_path = log_dir / f"{name}-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, **env}, cwd=REPO, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = ApiServer(f"http://127.0.0.1:{port}", process, log_path)

    def healthy() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"imgrestore api exited with {process.returncode}:\n{server.log()[-3000:]}")
        return urllib.request.urlopen(server.url + "/healthz", timeout=1).status == 200

    try:
        wait_until(healthy, 30, "imgrestore api to answer /healthz")
    except (TimeoutError, RuntimeError):
        server.stop()
        raise RuntimeError(f"imgrestore api did not start:\n{server.log()[-3000:]}") from None
    return server
