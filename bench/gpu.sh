#!/usr/bin/env bash
# Run ON the lent GPU machine (≤ 8 minutes): joins the onnxruntime-gpu wheel parts carried in .gpu/wheel, installs
# it into /tmp/site, puts the CUDA/cuDNN libraries that torch's nvidia-* packages brought on LD_LIBRARY_PATH, and
# runs bench/gpu_bench.py (CUDA EP with IO binding, fp16, batch sweep, vs PyTorch CUDA eager). Results → $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
if [ -f .gpu/wheel/NAME ] && ! python3 -c 'import sys; sys.path.insert(0,"/tmp/site"); import onnxruntime as o; assert "CUDAExecutionProvider" in o.get_available_providers()' 2>/dev/null; then
  wheel=/tmp/$(cat .gpu/wheel/NAME)
  cat .gpu/wheel/part-* > "$wheel"
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$wheel"
fi
export PYTHONPATH=/tmp/site:$PWD
nvidia_libs=$(python3 - <<'PY'
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
print(":".join(sorted({d for r in roots for d in glob.glob(os.path.join(r, "nvidia", "*", "lib"))})))
PY
)
export LD_LIBRARY_PATH=${nvidia_libs}:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu-device.txt"
PYTHONUNBUFFERED=1 timeout 450 python3 bench/gpu_bench.py --out "$OUT" || {
  echo "ONNX Runtime CUDA run failed; measuring the same weights with PyTorch CUDA only"
  PYTHONUNBUFFERED=1 timeout 300 python3 bench/gpu_bench.py --out "$OUT" --torch-only
}
# The overlapped worker on the GPU (issue 12): a pipelined worker's jobs/s against the bare model in the same run,
# when this machine has Redis and the service's dependencies (skipped otherwise; never fails the script).
if command -v redis-server >/dev/null && python3 -c 'import celery, moto, boto3, redis' 2>/dev/null; then
  redis-server --port 6390 --save '' --appendonly no --daemonize yes
  IMGRESTORE_BENCH_REDIS_URL=redis://127.0.0.1:6390/0 PYTHONUNBUFFERED=1 timeout 180 \
    python3 bench/worker_throughput.py --jobs 100 --name worker_throughput-gpu || echo "worker throughput run failed"
  cp bench/results/worker_throughput-gpu.* "$OUT/" 2>/dev/null || true
  redis-cli -p 6390 shutdown nosave >/dev/null 2>&1 || true
else
  echo "worker throughput skipped: no redis-server or no celery/moto/boto3 on this machine"
fi
