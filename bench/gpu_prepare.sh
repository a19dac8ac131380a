#!/usr/bin/env bash
# Run HERE (not on the GPU machine) before bench/gpu.sh: fetches the onnxruntime-gpu wheel for the GPU machine's
# Python 3.12, splits it into parts small enough for the device tool's 64 MiB per call, and writes fp16 copies of
# the shipped models (the GPU machine cannot install onnx tooling). Everything lands in .gpu/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
mkdir -p .gpu/wheel .gpu/fp16
version=${ORT_GPU_VERSION:-1.31.1}
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  -d .gpu/wheel "onnxruntime-gpu==$version"
wheel=$(ls .gpu/wheel/onnxruntime_gpu-*.whl)
basename "$wheel" > .gpu/wheel/NAME
( cd .gpu/wheel && split -b 40M -d "$(basename "$wheel")" part- && rm "$(basename "$wheel")" )
. .venv/bin/activate
pip install -q onnxconverter-common
python3 - <<'PY'
import json, pathlib
import onnx
from onnxconverter_common import float16
models = pathlib.Path("services/models")
for entry in json.loads((models / "manifest.json").read_text())["models"]:
    model = onnx.load(models / entry["file"])
    # fp16 weights and activations, fp32 at the edges: the service keeps feeding float32 tiles.
    half = float16.convert_float_to_float16(model, keep_io_types=True)
    onnx.save(half, f".gpu/fp16/{entry['name']}.onnx")
    print("fp16:", entry["name"])
PY
ls -la .gpu/wheel .gpu/fp16
echo "Carry the parts one call at a time (each run names one .gpu/wheel/part-NN plus .gpu/fp16 in carry), then run"
echo "bench/gpu.sh in the last call; see bench/README.md."
