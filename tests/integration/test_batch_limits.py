"""Issue 11, findings 8 and 11 with real parts (API process, worker processes, Redis, moto's S3 server): a large
inputs batch is queued by the workers, not inside the request; keys with '.'/'..' segments met by a backfill's
listing are reported as skipped in its failure report and never written."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support.api_server import start_api
from tests.support.processes import REPO, wait_until

TOKEN = f"limits-{uuid.uuid4().hex}"


def _png(seed: int, size: int = 40) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((size, size)) * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_large_inputs_batch_is_queued_by_the_workers(make_service, s3_client, bucket, tmp_path):
    service = make_service(workers=1)
    inputs = []
    for i in range(8):
        s3_client.put_object(Bucket=bucket, Key=f"big/in/p{i}.png", Body=_png(i))
        inputs.append(f"s3://{bucket}/big/in/p{i}.png")
    env = {**service.env, "IMGRESTORE_API_INLINE_BATCH_INPUTS": "3",
           "IMGRESTORE_API_TOKENS": json.dumps({TOKEN: {"name": "limits", "allow": [f"s3://{bucket}/"]}})}
    api = start_api(env, tmp_path, name="api-limits")
    try:
        with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as http:
            answer = http.post("/v1/batches", json={"task": "denoise", "inputs": inputs,
                                                    "output_prefix": f"s3://{bucket}/big/out/"})
            assert answer.status_code == 201, answer.text
            # (tests/api/test_quotas.py shows nothing is queued inside the request: here the worker may be quicker
            # than the answer)
            batch_id = answer.json()["id"]
            wait_until(lambda: http.get(f"/v1/batches/{batch_id}").json()["state"] == "finished", 120,
                       "the batch to finish")
            final = http.get(f"/v1/batches/{batch_id}").json()
            jobs = http.get(f"/v1/batches/{batch_id}/jobs").json()["jobs"]
    finally:
        api.stop()
    assert final["total"] == 8 and final["counts"]["succeeded"] == 8, final
    assert [job["input_url"] for job in jobs] == inputs  # in the order given
    written = {o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket, Prefix="big/out/")["Contents"]}
    assert written == {f"big/out/p{i}.png" for i in range(8)}
    assert service.store.unfinished_of("limits") == 0


@pytest.mark.parametrize("embedded", [False, True], ids=["queued", "embedded"])
def test_a_backfill_reports_keys_with_dot_segments_as_skipped(make_service, s3_client, bucket, tmp_path, embedded):
    service = make_service(workers=0 if embedded else 1)
    for key in ("dots/in/ok.png", "dots/in/../escape.png", "dots/in/./here.png", "dots/in/a//b.png",
                "dots/in/../notes.txt"):
        s3_client.put_object(Bucket=bucket, Key=key, Body=_png(len(key)))
    report = tmp_path / "failures.jsonl"
    command = [sys.executable, "-m", "services.cli", "backfill", "--task", "denoise", f"s3://{bucket}/dots/in/",
               "--output", f"s3://{bucket}/dots/out/", "--report", str(report),
               *(["--embedded", "--state-file", str(tmp_path / "state.jsonl")] if embedded else [])]
    done = subprocess.run(command, env={**os.environ, **service.env}, cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in report.read_text().splitlines()]
    skipped = sorted((r["input"], r["state"], r["type"]) for r in records)
    assert skipped == sorted((f"s3://{bucket}/{key}", "skipped", "unsafe_key")
                             for key in ("dots/in/../escape.png", "dots/in/./here.png", "dots/in/a//b.png"))
    assert all(r["message"] for r in records)
    assert "3 unsafe keys skipped" in " ".join(done.stderr.split())  # the console wraps lines
    written = [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket, Prefix="dots/out/")["Contents"]]
    assert written == ["dots/out/ok.png"]
