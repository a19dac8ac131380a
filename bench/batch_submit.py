"""How long ``POST /v1/batches`` with many ``inputs`` holds the request: queued inside it (the path before issue 11's
finding 8, still used up to IMGRESTORE_API_INLINE_BATCH_INPUTS) against saved and queued by a worker's expand task
(larger batches now). Both on a redis-server of its own, in one run; the API in-process (Starlette's TestClient).
The expansion the workers then do is timed too (``expand_step`` run here, as the worker task runs it).
Usage: python bench/batch_submit.py [--inputs 10000]"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient
from pydantic import SecretStr

from common import markdown_table, write_results  # noqa: E402

from services.api import create_app  # noqa: E402
from services.config import Settings  # noqa: E402
from services.queue.submission import INPUTS_SOURCE  # noqa: E402
from tests.support.chaos import RedisServer  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"


def measure(path: str, inputs: int, folder: Path) -> dict:
    server = RedisServer(folder / path, options=("--appendonly", "no"))
    server.start()
    try:
        settings = Settings(
            redis_url=server.url, queue_prefix="bench.", max_queued_jobs=0, metrics_port=0,
            api_tokens=SecretStr(json.dumps({TOKEN: {"name": "bench", "allow": ["s3://scans/"]}})),
            api_max_request_bytes=10_000_000, api_max_batch_inputs=inputs, api_max_unfinished_jobs_per_token=0,
            api_inline_batch_inputs=inputs if path == "inline" else 100)
        urls = [f"s3://scans/2019/box-{i // 100:04d}/page-{i:06d}.png" for i in range(inputs)]
        with TestClient(create_app(settings)) as client:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            client.post("/v1/batches", json={"task": "denoise", "inputs": urls[:2]}, headers=headers)  # warm
            started = time.perf_counter()
            answer = client.post("/v1/batches", json={"task": "denoise", "inputs": urls,
                                                      "output_prefix": "s3://scans/clean/"}, headers=headers)
            request_s = time.perf_counter() - started
            assert answer.status_code == 201, answer.text
            batch = answer.json()
            ctx = client.app.state.ctx
            expand_s = 0.0
            if path == "background":  # what the workers' expand task then does, step by step
                cursor: str | None = ""
                started = time.perf_counter()
                while cursor is not None:
                    cursor = ctx.batch_submitter.expand_step(batch["id"], INPUTS_SOURCE, [], cursor, ctx.storage,
                                                             max_in_flight=inputs + 1)
                expand_s = time.perf_counter() - started
            final = ctx.batches.get(batch["id"])
            assert final.total == inputs and final.sealed, final
        return {"path": path, "inputs": inputs, "request_s": round(request_s, 3),
                "state_in_answer": batch["state"], "queued_by_workers_s": round(expand_s, 3)}
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inputs", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = [measure(path, args.inputs, Path(folder)) for path in ("inline", "background")]
    ratio = rows[0]["request_s"] / rows[1]["request_s"]
    write_results("batch_submit", f"POST /v1/batches with {args.inputs:,} inputs: time inside the request",
                  {"rows": rows, "request_time_ratio_inline_over_background": round(ratio, 1)},
                  [("Results", markdown_table(rows)),
                   ("Reading", f"The request returns {ratio:.0f}× sooner when the inputs are saved and queued by "
                               "a worker's expand task; the queueing itself moves to the workers "
                               "(queued_by_workers_s), in steps of 5 000 inputs per task message.")])


if __name__ == "__main__":
    main()
