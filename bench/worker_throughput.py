"""Worker throughput against the bare model (issue 12): N × 1 MP document denoise jobs through real Redis and S3
(moto's server) to one pipelined worker — ``--concurrency`` pool processes sharing ``--model-slots`` model slots, so
downloads, decodes, encodes and uploads overlap the model — against the bare inference throughput of the same model
on the same decoded page in one process with the same ONNX Runtime threads, measured in the same run (before and
after the workers; the baseline is their mean). Target: worker ≥ 90 % of bare. For context, the same jobs through a
worker that does not overlap (one pool process, no slots) are measured too (``--no-serial`` leaves them out).

Worker throughput = jobs / (last job's ``finished_at`` − first job's ``started_at``), from the job records: the
worker's steady state, without the submission or the polling. Each worker is warmed first (every pool process loads
the model on its first job). ``bench/service_overhead.py`` keeps measuring one job's latency.

Usage (a quiet machine; flushes the Redis database it is given, 14 by default):
    IMGRESTORE_BENCH_REDIS_URL=redis://127.0.0.1:6379/14 python bench/worker_throughput.py --jobs 200
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import boto3

from common import bare_inference, markdown_table, redis_url, write_results  # noqa: E402  (bench/ is the script's folder)
from service_overhead import AWS, one_megapixel_page  # noqa: E402

from services.config import Settings  # noqa: E402
from services.jobs import JobRequest, JobState  # noqa: E402
from services.queue.celery_app import create_app  # noqa: E402
from services.queue.clients import QueueClients  # noqa: E402
from tests.support.processes import start_moto, start_worker  # noqa: E402

STAGES = ("download", "decode", "model_wait", "infer", "encode", "upload")


def bare_throughput(data: bytes, threads: int, jobs: int) -> float:
    """Images per second of decoded pixels → tiled ONNX Runtime inference, nothing else, one process."""
    _, infer = bare_inference(data, Settings(intra_op_threads=threads))
    started = time.perf_counter()
    for _ in range(jobs):
        infer()
    return jobs / (time.perf_counter() - started)


def worker_run(label: str, env: dict, work: Path, jobs: int, concurrency: int) -> dict:
    """Starts a worker, warms each of its pool processes, runs ``jobs`` jobs at once and reads their records."""
    env = {**env, "IMGRESTORE_QUEUE_PREFIX": f"bench{uuid.uuid4().hex[:6]}."}
    config = Settings(**{k.removeprefix("IMGRESTORE_").lower(): v for k, v in env.items()
                         if k.startswith("IMGRESTORE_")})
    app = create_app(config)
    submitter = QueueClients.from_settings(config, app=app).submitter
    worker = start_worker(f"{label}-{uuid.uuid4().hex[:4]}@bench", env, work, concurrency=concurrency, app=app)

    def run_all(count: int, prefix: str) -> list:
        submitted = [submitter.submit(JobRequest(task="denoise", profile="document",
                                                 input_url=f"s3://bench/in/{i:04d}.png",
                                                 output_url=f"s3://bench/{prefix}/{i:04d}.png")).id
                     for i in range(count)]
        done = [submitter.wait(job_id, timeout=3600, poll=0.05) for job_id in submitted]
        failed = [j for j in done if j.state is not JobState.succeeded]
        if failed:
            raise RuntimeError(f"{label}: {len(failed)} jobs did not succeed, e.g. {failed[0].error}")
        return done

    try:
        run_all(3 * concurrency, f"warm-{label}")  # every pool process loads the model on its first job
        records = run_all(jobs, f"out-{label}")
    finally:
        worker.stop()
    span = (max(r.finished_at for r in records) - min(r.started_at for r in records)).total_seconds()
    stages = {s: sum(getattr(r.timings, s) or 0.0 for r in records) / len(records) for s in STAGES}
    return {"worker": label, "concurrency": concurrency, "model_slots": int(env.get("IMGRESTORE_MODEL_SLOTS", 0)),
            "jobs": jobs, "seconds": span, "jobs_per_s": jobs / span, "mean_stage_seconds": stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=3, help="pool processes of the pipelined worker")
    parser.add_argument("--model-slots", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0,
                        help="ONNX Runtime intra-op threads, bare and worker alike (0: ORT's default)")
    parser.add_argument("--no-serial", action="store_true", help="skip the non-overlapping worker")
    parser.add_argument("--name", default="worker_throughput", help="results file name under bench/results")
    args = parser.parse_args()
    data = one_megapixel_page()

    bare_before = bare_throughput(data, args.threads, args.jobs)

    work = Path(tempfile.mkdtemp(prefix="imgrestore-bench-"))
    moto = start_moto(work)
    os.environ.update(AWS)
    s3 = boto3.client("s3", endpoint_url=moto.endpoint)
    s3.create_bucket(Bucket="bench")
    for i in range(max(args.jobs, 3 * args.concurrency)):
        s3.put_object(Bucket="bench", Key=f"in/{i:04d}.png", Body=data)
    env = {**AWS, "IMGRESTORE_REDIS_URL": redis_url(), "IMGRESTORE_S3_ENDPOINT_URL": moto.endpoint,
           "IMGRESTORE_METRICS_PORT": "0", "IMGRESTORE_LOG_LEVEL": "WARNING",
           "IMGRESTORE_INTRA_OP_THREADS": str(args.threads)}
    runs = []
    try:
        runs.append(worker_run("pipelined", {**env, "IMGRESTORE_MODEL_SLOTS": str(args.model_slots)}, work,
                               args.jobs, args.concurrency))
        if not args.no_serial:
            runs.append(worker_run("serial", {**env, "IMGRESTORE_MODEL_SLOTS": "0"}, work, args.jobs, 1))
    finally:
        moto.stop()

    bare_after = bare_throughput(data, args.threads, args.jobs)
    bare = (bare_before + bare_after) / 2
    for run in runs:
        run["ratio_to_bare"] = run["jobs_per_s"] / bare
    pipelined = runs[0]
    met = pipelined["ratio_to_bare"] >= 0.90
    rows = [{"path": "bare inference (one process, same model and threads)", "jobs/s": bare, "ratio": 1.0}] + [
        {"path": f"{r['worker']} worker (concurrency {r['concurrency']}, model slots {r['model_slots'] or 'off'})",
         "jobs/s": r["jobs_per_s"], "ratio": r["ratio_to_bare"]} for r in runs]
    stage_rows = [{"worker": r["worker"], **{s: round(v, 4) for s, v in r["mean_stage_seconds"].items()}}
                  for r in runs]
    write_results(args.name, "Worker throughput against the bare model (1 MP document pages)", {
        "image": "1000×1000 gray PNG (samples/documents/dirty-page-1.png resized)", "jobs": args.jobs,
        "intra_op_threads": args.threads, "bare_jobs_per_s_before": bare_before, "bare_jobs_per_s_after": bare_after,
        "bare_jobs_per_s": bare, "workers": runs, "target_ratio": 0.90, "met": met},
        [("Throughput", markdown_table([{**r, "jobs/s": round(r["jobs/s"], 3), "ratio": round(r["ratio"], 3)}
                                        for r in rows])),
         ("Mean seconds per job in each stage", markdown_table(stage_rows)),
         ("Result", f"Pipelined worker / bare model = **{pipelined['ratio_to_bare']:.1%}** (target ≥ 90 %: "
                    f"{'met' if met else 'missed'}); bare {bare_before:.2f} jobs/s before the workers, "
                    f"{bare_after:.2f} after.")])


if __name__ == "__main__":
    sys.exit(main())
