#!/usr/bin/env bash
# Training legs on a lent GPU machine (the device tool; 15 minutes of device time per session, all calls together).
#
#   1. here:    bash training/gpu.sh pack                 # .gpu/: training photos + fonts (git-ignored, ~20 MB)
#   2. device:  run(command="bash training/gpu.sh run", carry=[".gpu"], timeout_s=590)
#               one leg per shipped model from its promoted ONNX weights, MINUTES each (default 1.75),
#               CUDA + bf16 autocast, 8x the config's batch, 14 data workers; weights come back as MODEL.pt
#   3. here:    bash training/gpu.sh promote DIR           # DIR: where the device tool put the files
#               each model through the same gate as a CPU leg (evaluate; export + quantise + ship if better)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  pack)
    python -m training.gpu pack ;;
  run)
    export PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total --format=csv || true
    python3 -m training.gpu run --out "${OUT:?the device tool sets OUT}" --minutes "${MINUTES:-1.75}" ;;
  promote)
    dir=${2:?usage: gpu.sh promote DIR (the folder holding the returned MODEL.pt files)}
    for pt in "$dir"/*.pt; do
      name=$(basename "$pt" .pt)
      mkdir -p "training/runs/$name-gpu"
      cp "$pt" "training/runs/$name-gpu/model.pt"
      python -m training promote "$name" --run-dir "training/runs/$name-gpu"
    done ;;
  *)
    sed -n '2,12p' "$0"; exit 2 ;;
esac
