"""Jobs through the whole service: real Redis, moto's S3 server over HTTP, a real `imgrestore worker` process."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from services.jobs import JobRequest, JobState
from tests.support.corpus import build_corpus

N_PER_TASK = 3


def _image_bytes(width: int, height: int, mode: str, fmt: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    shape = (height, width) if mode == "L" else (height, width, 3)
    buffer = io.BytesIO()
    Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


# task, profile, input mode, expected output mode
CASES = [
    ("denoise", "document", "L", "L"),
    ("denoise", "photo", "RGB", "RGB"),
    ("colorize", "auto", "L", "RGB"),
    ("watermark", "auto", "RGB", "RGB"),
]


def test_jobs_for_every_task_succeed_with_outputs_in_s3(worker, submitter, store, s3_client, bucket):
    submitted = []
    for task, profile, mode, expected_mode in CASES:
        for i in range(N_PER_TASK):
            width, height = 90 + 37 * i, 70 + 53 * i  # several tiles for the larger ones (tile 64)
            fmt = ("PNG", "JPEG", "TIFF")[i]
            key = f"in/{task}-{profile}-{i}.{fmt.lower()}"
            s3_client.put_object(Bucket=bucket, Key=key, Body=_image_bytes(width, height, mode, fmt, i))
            job = submitter.submit(JobRequest(task=task, profile=profile, input_url=f"s3://{bucket}/{key}"))
            submitted.append((job, width, height, expected_mode, fmt))

    for job, width, height, expected_mode, fmt in submitted:
        final = submitter.wait(job.id, timeout=120)
        assert final.state is JobState.succeeded, final.error
        assert final.attempts == 1 and final.provider == "CPUExecutionProvider"
        timings = final.timings.model_dump()
        assert timings.pop("model_wait") is None, timings  # this worker has no model slots (IMGRESTORE_MODEL_SLOTS)
        assert all(timings[stage] is not None and timings[stage] >= 0 for stage in timings), timings
        assert final.timings.infer > 0
        assert final.result.width == width and final.result.height == height

        bucket_name, key = final.output_url.removeprefix("s3://").split("/", 1)
        assert key.startswith("in/restored/")
        body = s3_client.get_object(Bucket=bucket_name, Key=key)["Body"].read()
        output = Image.open(io.BytesIO(body))
        assert output.size == (width, height)
        assert output.mode == expected_mode
        assert output.format == fmt
        assert final.result.bytes == len(body)


def test_bad_inputs_fail_their_own_job_and_the_worker_serves_the_next(worker, submitter, s3_client, bucket):
    cases = build_corpus()
    jobs = []
    for case in cases:
        key = f"corpus/{case.name}/{case.filename}"
        s3_client.put_object(Bucket=bucket, Key=key, Body=case.data)
        jobs.append((case, submitter.submit(JobRequest(task="denoise", input_url=f"s3://{bucket}/{key}"))))
    s3_client.put_object(Bucket=bucket, Key="after.png", Body=_image_bytes(64, 64, "RGB", "PNG", 9))
    after = submitter.submit(JobRequest(task="watermark", input_url=f"s3://{bucket}/after.png"))

    for case, job in jobs:
        final = submitter.wait(job.id, timeout=120)
        if case.expect_error:
            assert final.state is JobState.failed, case.name
            assert final.error.type == case.expect_error, (case.name, final.error)
            assert final.attempts == 1 and final.retries == 0  # permanent: no retries
            continue
        assert final.state is JobState.succeeded, (case.name, final.error)
        body = s3_client.get_object(Bucket=bucket, Key=final.output_url.split("/", 3)[3])["Body"].read()
        output = Image.open(io.BytesIO(body))
        assert (output.mode, output.size) == (case.expect_mode, case.expect_size), case.name
        if case.check:
            case.check(output)

    assert submitter.wait(after.id, timeout=60).state is JobState.succeeded
    assert worker.alive()


def test_missing_input_fails_at_once_with_the_reason(worker, submitter, bucket):
    job = submitter.submit(JobRequest(task="denoise", input_url=f"s3://{bucket}/nope.png"))
    final = submitter.wait(job.id, timeout=60)
    assert final.state is JobState.failed
    assert final.error.type == "input_not_found" and "nope.png" in final.error.message
    assert final.retries == 0


def _cli(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)


def test_cli_submit_wait_and_status(worker, service_env, s3_client, bucket):
    s3_client.put_object(Bucket=bucket, Key="cli/in.png", Body=_image_bytes(50, 40, "L", "PNG", 3))
    done = _cli(service_env, "submit", "--task", "colorize", f"s3://{bucket}/cli/in.png", "--wait",
                "--output", f"s3://{bucket}/cli/out.webp", "--format", "webp")
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["state"] == "succeeded" and job["result"]["format"] == "WEBP"
    assert s3_client.head_object(Bucket=bucket, Key="cli/out.webp")["ContentType"] == "image/webp"

    quick = _cli(service_env, "submit", "--task", "denoise", "--json", f"s3://{bucket}/cli/in.png")
    assert quick.returncode == 0 and json.loads(quick.stdout)["state"] == "queued"
    status = _cli(service_env, "status", job["id"])
    assert status.returncode == 0 and json.loads(status.stdout)["id"] == job["id"]

    s3_client.put_object(Bucket=bucket, Key="cli/bad.png", Body=b"not a png")
    failed = _cli(service_env, "submit", "--task", "denoise", f"s3://{bucket}/cli/bad.png", "--wait")
    assert failed.returncode == 1 and json.loads(failed.stdout)["error"]["type"] == "image_decode"


def test_cli_status_of_an_unknown_job_is_a_clear_error(service_env):
    result = _cli(service_env, "status", "does-not-exist")
    assert result.returncode == 2
    assert "no job 'does-not-exist'" in result.stderr


def test_cli_rejects_unknown_schemes_before_queueing(service_env):
    result = _cli(service_env, "submit", "--task", "denoise", "ftp://host/x.png")
    assert result.returncode == 2 and "unsupported scheme 'ftp'" in result.stderr


@pytest.mark.parametrize("profile", ["auto"])
def test_auto_profile_is_recorded(worker, submitter, s3_client, bucket, profile):
    page = np.full((120, 90), 240, np.uint8)
    page[20:30, 10:80] = 20
    buffer = io.BytesIO()
    Image.fromarray(page).save(buffer, "PNG")
    s3_client.put_object(Bucket=bucket, Key="page.png", Body=buffer.getvalue())
    job = submitter.submit(JobRequest(task="denoise", profile=profile, input_url=f"s3://{bucket}/page.png"))
    final = submitter.wait(job.id, timeout=60)
    assert final.state is JobState.succeeded
    assert final.result.profile == "document" and final.result.model.startswith("doc-denoise")
