"""Chaos benchmark (issue 15): faults together, at seeded random times, over a real backfill on two workers.

Per seed: worker SIGKILLs (a new worker starts 1–3 s later), Redis SIGKILLed and restarted on its AOF after 2–15 s,
10 % of the workers' S3 requests failing through tests/support/faulty_proxy.py (500, 503 SlowDown, resets, 1.5 s
delays). Reports succeeded / failed / lost / stuck / counted twice, attempts > 1, lost deliveries, interrupted
deliveries, orphans re-queued, and the time against a clean run of the same pages with the same two workers.

Usage: python bench/chaos.py [--pages 300] [--seeds 1 2 3 4 5] [--kills 3] [--outages 2]
Writes bench/results/chaos.json and chaos.md; exit status 1 when any seed lost, stuck or double-counted a job.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from common import git_commit, markdown_table, write_results  # noqa: E402  (bench/ is the script's folder)

from tests.support.chaos import AWS, ChaosRun, schedule, upload_pages  # noqa: E402
from tests.support.onnx_models import write_model_dir  # noqa: E402
from tests.support.processes import start_moto  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--kills", type=int, default=3, help="worker SIGKILLs per run")
    parser.add_argument("--outages", type=int, default=2, help="Redis SIGKILL + restarts per run")
    parser.add_argument("--results-name", default="chaos")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="imgrestore-chaos-"))
    os.environ.update(AWS)
    moto = start_moto(work)
    models = write_model_dir(work / "models")
    upload_pages(moto.endpoint, "chaos", "in/", args.pages)
    rows, runs = [], []
    try:
        print(f"clean run of {args.pages} pages (logs under {work})", flush=True)
        clean = ChaosRun(work / "clean", moto.endpoint, models, "chaos", "in/", args.pages, s3_fault_fraction=0.0)
        clean_result = clean.run([])
        clean_seconds = clean_result.seconds
        # Faults fall within the time a clean run takes, stretched by what the faults themselves cost.
        horizon = max(30.0, clean_seconds * 1.5)
        for seed in args.seeds:
            faults = schedule(seed, horizon, args.kills, args.outages)
            print(f"seed {seed}: {faults}", flush=True)
            run = ChaosRun(work / f"seed-{seed}", moto.endpoint, models, "chaos", "in/", args.pages, seed=seed)
            result = run.run(faults)
            runs.append(result.as_dict() | {"events": run.log})
            # What was injected, not what was scheduled: a run can end before its last faults.
            kills = sum("SIGKILL c" in line for line in run.log)
            downs = [f"{f.seconds:.0f}" for f in faults if f.kind == "redis_outage"][
                :sum("Redis SIGKILLed" in line for line in run.log)]
            rows.append({"seed": seed, "worker kills": kills,
                         "Redis down (s)": "+".join(downs) or "–", "S3 faults": sum(result.s3_faults.values()),
                         "succeeded": result.succeeded, "failed": result.failed, "lost": result.lost,
                         "stuck": result.stuck, "counted twice": result.counted_twice,
                         "attempts > 1": result.attempts_over_1, "lost deliveries": result.lost_deliveries,
                         "interrupted": result.interrupted, "orphans re-queued": result.orphans_requeued,
                         "seconds": result.seconds, "vs clean": f"{result.seconds / clean_seconds:.2f}×"})
            print(rows[-1], flush=True)
    finally:
        moto.stop()
    bad = [r for r in runs if r["lost"] or r["stuck"] or r["counted_twice"]]
    summary = {"pages": args.pages, "workers": 2, "commit": git_commit(), "clean": clean_result.as_dict(),
               "clean_seconds": clean_seconds, "horizon_s": horizon, "runs": runs,
               "totals": {k: sum(r[k] for r in runs) for k in ("succeeded", "failed", "lost", "stuck",
                                                                "counted_twice", "attempts_over_1")}}
    write_results(args.results_name, "Chaos: faults together over a backfill", summary, [
        ("Setup", f"{args.pages} pages (64×64 PNG, tiny test model), 2 workers × 1 process, backfill "
                  f"--max-in-flight 50; per seed {args.kills} worker SIGKILLs and {args.outages} Redis SIGKILL + "
                  f"AOF restarts (2–15 s down) within {horizon:.0f} s, 10 % S3 faults on the workers' requests. "
                  f"Clean run of the same pages: {clean_seconds:.1f} s ({clean_result.succeeded} succeeded)."),
        ("Runs", markdown_table(rows)),
        ("Verdict", "0 lost, 0 stuck, 0 counted twice over every seed" if not bad else
         f"FAILED: {[(r['seed'], r['lost'], r['stuck'], r['counted_twice']) for r in bad]}"),
    ])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
