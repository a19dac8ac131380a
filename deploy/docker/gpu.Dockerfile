# syntax=docker/dockerfile:1.7
# imgrestore images for NVIDIA GPU nodes. Targets: `api`, `worker` (the default). Build from the repository root:
#   docker build -f deploy/docker/gpu.Dockerfile --target worker -t imgrestore/worker-gpu:0.1.0 .
# (The API queues and reads jobs and runs no model: the CPU image's `api` target is the one to deploy; this one
# exists for single-image installs.)
#
# Why these versions: the CUDA/cuDNN base must match the CUDA major version onnxruntime-gpu was built for.
# - onnxruntime-gpu >= 1.27 on PyPI is built for CUDA 13 + cuDNN 9: 1.31.1's CUDA provider links
#   libcudart.so.13 and libcublas.so.13, and its `cuda`/`cudnn` extras name the CUDA 13 nvidia-* wheels.
#   CUDA 13 needs NVIDIA driver >= 580 on the node.
# - onnxruntime-gpu 1.19 to 1.26 is built for CUDA 12 + cuDNN 9 (driver >= 525). For older drivers build with
#     --build-arg ORT_GPU_VERSION=1.26.0 --build-arg CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
# Any CUDA minor version of the right major works (CUDA minor-version compatibility); cuDNN must be 9.x.
# The build stage uses the same Ubuntu release as the CUDA image, so the virtualenv's Python (3.12) is the
# same interpreter at the same path in both.

ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04
ARG BUILD_IMAGE=ubuntu:24.04
ARG ORT_GPU_VERSION=1.31.1

FROM ${BUILD_IMAGE} AS build
ARG ORT_GPU_VERSION
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
# `.[gpu]` only: onnxruntime-gpu replaces onnxruntime (the same module); never both, never the `train` extra.
# DL3013: the project is installed from this source tree; onnxruntime is pinned, the other dependencies
# follow pyproject.toml's bounds (pin them with a constraints file for fully reproducible images).
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[gpu]" "onnxruntime-gpu==${ORT_GPU_VERSION}" \
    && python -c "import services.cli, onnxruntime; print('onnxruntime', onnxruntime.__version__)"

FROM ${CUDA_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    IMGRESTORE_LOG_FORMAT=json
RUN groupadd --system --gid 10001 imgrestore \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin imgrestore \
    && install -d -o 10001 -g 10001 /work
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/imgrestore-entrypoint
COPY --chmod=0755 deploy/docker/healthcheck.py /usr/local/bin/imgrestore-healthcheck
COPY --from=build /opt/venv /opt/venv
WORKDIR /work
USER 10001:10001
ENTRYPOINT ["imgrestore-entrypoint"]

FROM runtime AS api
ENV VERIFY_MODELS=sha256
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["imgrestore-healthcheck", "api"]
CMD ["imgrestore", "api", "--host", "0.0.0.0", "--port", "8000"]

FROM runtime AS worker
# A GPU worker whose sessions fell back to CPU would run, slowly, on an expensive node: refuse to start instead.
ENV VERIFY_MODELS=full \
    VERIFY_REQUIRE_PROVIDER=CUDAExecutionProvider
EXPOSE 9808
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 CMD ["imgrestore-healthcheck", "worker"]
CMD ["imgrestore", "worker"]
