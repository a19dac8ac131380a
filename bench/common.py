"""What every benchmark shares: the machine it ran on, results written as JSON + a markdown table, services."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import onnxruntime

    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "platform": platform.platform(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    try:
        load = os.getloadavg()[0]
        info["load_average_at_start"] = round(load, 2)
    except OSError:
        pass
    return info


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return "–" if value is None else str(value)


def write_results(name: str, title: str, data: dict, sections: list[tuple[str, str]]) -> Path:
    """bench/results/<name>.json (figures + machine) and <name>.md (title, machine line, sections)."""
    RESULTS.mkdir(exist_ok=True)
    data = {"benchmark": name, "machine": machine(), **data}
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    m = data["machine"]
    lines = [f"# {title}", "", f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, onnxruntime "
             f"{m['onnxruntime']}" + (f", torch {m['torch']}" if "torch" in m else "") + f"; {m['date']}.", ""]
    for heading, body in sections:
        lines += [f"## {heading}", "", body, ""]
    path = RESULTS / f"{name}.md"
    path.write_text("\n".join(lines))
    print(path.read_text())
    return path


@contextmanager
def timer():
    started = time.perf_counter()
    box = {}
    yield box
    box["seconds"] = time.perf_counter() - started


def redis_url() -> str:
    url = os.environ.get("IMGRESTORE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    import redis

    redis.Redis.from_url(url).flushdb()
    return url


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bare_inference(data: bytes, settings) -> tuple[str, Callable[[], None]]:
    """The baseline the service benchmarks are read against: decoded pixels → tiled ONNX Runtime inference, nothing
    else, in this process. Loads the denoise/document model (``settings``: threads, tile batch), decodes ``data`` and
    runs once to warm up; returns the model's ``name@version`` and one more inference of the page to time."""
    from services.imaging.codecs import decode  # noqa: PLC0415  (not every benchmark needs the models)
    from services.inference.registry import ModelRegistry  # noqa: PLC0415
    from services.inference.runner import TileSettings, run_model  # noqa: PLC0415

    registry = ModelRegistry.from_settings(settings)
    spec = registry.resolve("denoise", "document")
    model = registry.load(spec)
    pixels = decode(data, settings.max_pixels).pixels
    tiles = TileSettings(spec.tiling.tile_size, spec.tiling.overlap, settings.tile_batch_size)

    def infer() -> None:
        run_model(model, pixels, tiles)

    infer()  # warm-up
    return spec.qualified_name, infer


def git_commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()


def lpush_ceiling(url: str, seconds: float = 2.0, payload_bytes: int = 600) -> dict:
    """The Redis-only ceiling the queue benchmarks are read against, measured in the same run (redis-benchmark's
    LPUSH test, in Python with the service's client): one connection, ``payload_bytes`` messages (a queued job's
    size), one command per round trip and then pipelined 200 at a time. The list is dropped afterwards."""
    import redis  # noqa: PLC0415  (bench/ scripts import their own)

    client = redis.Redis.from_url(url)
    key = f"bench-lpush-ceiling-{os.getpid()}"
    payload = b"x" * payload_bytes
    try:
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            client.lpush(key, payload)
            count += 1
        single = count / (time.perf_counter() - started)
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            with client.pipeline(transaction=False) as pipe:
                for _ in range(200):
                    pipe.lpush(key, payload)
                pipe.execute()
            count += 200
        pipelined = count / (time.perf_counter() - started)
    finally:
        client.delete(key)
        client.close()
    return {"lpush_per_s": round(single), "lpush_pipelined_per_s": round(pipelined)}
