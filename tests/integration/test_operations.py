"""Operating the service: worker metrics, `imgrestore monitor`, dead letters and `imgrestore retry`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import urllib.request
import uuid

import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from services.jobs import JobRequest, JobState
from services.queue.batch_store import Batch, BatchStore
from services.queue.celery_app import create_app
from services.queue.job_store import JobStore
from services.queue.submission import BatchSubmitter, Submitter
from tests.integration.conftest import settings_from
from tests.support.processes import free_port, start_worker, wait_until


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((100, 80, 3)) * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def ops(service_env, tmp_path_factory):
    port = free_port()
    env = {**service_env, "IMGRESTORE_QUEUE_PREFIX": f"o{uuid.uuid4().hex[:8]}.", "IMGRESTORE_METRICS_PORT": str(port),
           "IMGRESTORE_KEY_PREFIX": f"ops{uuid.uuid4().hex[:6]}:"}
    settings = settings_from(env)
    app = create_app(settings)
    worker = start_worker(f"ops-{uuid.uuid4().hex[:6]}@test", env, tmp_path_factory.mktemp("ops"), app=app)
    store = JobStore.from_url(settings.redis_url, settings.key_prefix)
    yield {"env": env, "port": port, "submitter": Submitter(settings, store, app), "store": store,
           "settings": settings, "app": app, "worker": worker}
    worker.stop()


def _cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


def test_worker_metrics_endpoint(ops, s3_client, bucket):
    submitter = ops["submitter"]
    s3_client.put_object(Bucket=bucket, Key="m/ok.png", Body=_png(1))
    s3_client.put_object(Bucket=bucket, Key="m/bad.png", Body=b"garbage")
    good = [submitter.submit(JobRequest(task="watermark", input_url=f"s3://{bucket}/m/ok.png",
                                        output_url=f"s3://{bucket}/m/out{i}.png")) for i in range(3)]
    bad = submitter.submit(JobRequest(task="watermark", input_url=f"s3://{bucket}/m/bad.png"))
    for job in good + [bad]:
        submitter.wait(job.id, timeout=60)

    text = urllib.request.urlopen(f"http://127.0.0.1:{ops['port']}/metrics", timeout=5).read().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("imgrestore_jobs_total", (("state", "succeeded"), ("task", "watermark")))] == 3
    assert samples[("imgrestore_jobs_total", (("state", "failed"), ("task", "watermark")))] == 1
    assert samples[("imgrestore_job_failures_total", (("reason", "image_decode"), ("task", "watermark")))] == 1
    # The failed job spent time downloading and (failing to) decode; only the good ones reached the later stages.
    for stage, count in (("download", 4), ("decode", 4), ("infer", 3), ("encode", 3), ("upload", 3)):
        assert samples[("imgrestore_stage_seconds_count", (("stage", stage), ("task", "watermark")))] == count
    assert samples[("imgrestore_megapixels_total", (("task", "watermark"),))] == pytest.approx(3 * 0.008)
    loads = [v for (name, labels), v in samples.items() if name == "imgrestore_model_load_seconds"]
    assert loads and all(v > 0 for v in loads)
    assert any(name == "imgrestore_provider_info" and dict(labels)["provider"] == "CPUExecutionProvider"
               for name, labels in samples)


def test_monitor_snapshot_shows_workers_queues_and_failures(ops, s3_client, bucket):
    submitter = ops["submitter"]
    job = submitter.submit(JobRequest(task="denoise", input_url=f"s3://{bucket}/missing.png"))
    submitter.wait(job.id, timeout=60)
    result = _cli(ops["env"], "monitor", "--once", "--json")
    assert result.returncode == 0, result.stderr
    snapshot = json.loads(result.stdout)
    assert [w["name"] for w in snapshot["workers"]] == [ops["worker"].name]
    assert set(snapshot["queues"]) == {ops["settings"].queue_for(t) for t in ("denoise", "colorize", "watermark")} \
        | {ops["settings"].control_queue}
    assert snapshot["finished"]["failed"] >= 1
    assert snapshot["failures"][0]["id"] == job.id and snapshot["failures"][0]["error"]["type"] == "input_not_found"
    plain = _cli(ops["env"], "monitor", "--once")
    assert "Recent failures" in plain.stdout and "input_not_found" in plain.stdout


def test_dead_letters_can_be_requeued_once_the_cause_is_fixed(ops, s3_client, bucket):
    submitter, store = ops["submitter"], ops["store"]
    job = submitter.submit(JobRequest(task="colorize", input_url=f"s3://{bucket}/late.png"))
    assert submitter.wait(job.id, timeout=60).state is JobState.failed
    assert job.id in store.dead_letters()

    s3_client.put_object(Bucket=bucket, Key="late.png", Body=_png(2))  # the cause goes away
    result = _cli(ops["env"], "retry", job.id)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["requeued"] == [job.id]
    final = submitter.wait(job.id, timeout=60)
    assert final.state is JobState.succeeded and final.attempts == 2 and final.error is None
    assert job.id not in store.dead_letters()


def test_retry_failed_jobs_of_a_batch(ops, s3_client, bucket):
    settings, app, store = ops["settings"], ops["app"], ops["store"]
    batches = BatchStore(store)
    for i in range(3):
        s3_client.put_object(Bucket=bucket, Key=f"b/{i}.png", Body=_png(i))
    inputs = [f"s3://{bucket}/b/{i}.png" for i in range(5)]  # 3 and 4 do not exist yet
    batch = BatchSubmitter(settings, store, batches, ops["submitter"], app).submit_inputs(
        Batch(task="denoise", output_prefix=f"s3://{bucket}/b-out/"), inputs)
    wait_until(lambda: batches.get(batch.id).done == 5, 60, "the batch to finish")
    assert (batches.get(batch.id).succeeded, batches.get(batch.id).failed) == (3, 2)

    for i in (3, 4):
        s3_client.put_object(Bucket=bucket, Key=f"b/{i}.png", Body=_png(i))
    result = _cli(ops["env"], "retry", "--failed", batch.id)
    assert len(json.loads(result.stdout)["requeued"]) == 2
    wait_until(lambda: batches.get(batch.id).succeeded == 5, 60, "the re-queued jobs to succeed")
    assert batches.get(batch.id).failed == 0


def _orphan(store: JobStore, submitter: Submitter, tmp_path, name: str):
    """Issue 15's lost job: ``running``, attempts 1, no lease, no message in any queue or in ``unacked``."""
    (tmp_path / f"{name}.png").write_bytes(_png(9))
    job = submitter.submit(JobRequest(task="denoise", input_url=str(tmp_path / f"{name}.png"),
                                      output_url=str(tmp_path / f"{name}-out.png")))
    # Submitted with no worker on this queue prefix: take its message away and start it on a worker that is gone.
    queue = submitter.settings.queue_for("denoise")
    assert store.redis.lrem(queue, 0, store.redis.lindex(queue, 0)) == 1
    assert store.start(job.id, "gone@test", 1).status == "started"
    return job


def test_workers_requeue_an_orphan_and_monitor_counts_it(make_service, tmp_path):
    # A key prefix of its own: the sweep turn (one sweeper per interval) is not shared with other tests' workers.
    service = make_service(0, IMGRESTORE_VISIBILITY_TIMEOUT="3", IMGRESTORE_LEASE_RENEW_INTERVAL="0.5",
                           IMGRESTORE_UNACKED_RESTORE_INTERVAL="1", IMGRESTORE_ORPHAN_SWEEP_INTERVAL="1",
                           IMGRESTORE_KEY_PREFIX=f"orph{uuid.uuid4().hex[:6]}:")
    before = service.store.recovery_counts()["orphans_requeued"]
    job = _orphan(service.store, service.submitter, tmp_path, "sweep")
    service.start_worker()
    final = service.submitter.wait(job.id, timeout=60)
    assert final.state is JobState.succeeded, final
    assert (final.attempts, final.lost, final.orphaned) == (2, 0, 1)
    snapshot = json.loads(_cli(service.env, "monitor", "--once", "--json").stdout)
    assert snapshot["recovery"]["orphans_requeued"] == before + 1 == 1
    assert "1 orphans re-queued" in _cli(service.env, "monitor", "--once").stdout


def test_retry_accepts_an_orphan_and_refuses_a_job_a_worker_holds(ops, tmp_path):
    store, submitter = ops["store"], ops["submitter"]
    # Prepared on a queue no worker serves, so the ops worker takes neither job before the test is ready.
    elsewhere = Submitter(ops["settings"].model_copy(update={"queue_prefix": f"x{uuid.uuid4().hex[:6]}."}), store,
                          ops["app"])
    held = elsewhere.submit(JobRequest(task="denoise", input_url=str(tmp_path / "never.png")))
    store.start(held.id, "busy@test", 600_000)  # a live lease: someone is running it
    orphan = _orphan(store, elsewhere, tmp_path, "cli")
    result = _cli(ops["env"], "retry", orphan.id, held.id)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["requeued"] == [orphan.id]
    assert answer["skipped"][0]["id"] == held.id and "holds it" in answer["skipped"][0]["reason"]
    final = submitter.wait(orphan.id, timeout=60)
    assert final.state is JobState.succeeded and final.orphaned == 1 and final.lost == 0
