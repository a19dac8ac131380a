# syntax=docker/dockerfile:1.7
# imgrestore images for CPU nodes. Targets: `api`, `flower`, `worker` (the default). Build from the repository root:
#   docker build -f deploy/docker/cpu.Dockerfile --target worker -t imgrestore/worker-cpu:0.1.0 .
#   docker build -f deploy/docker/cpu.Dockerfile --target api    -t imgrestore/api:0.1.0 .
#   docker build -f deploy/docker/cpu.Dockerfile --target flower -t imgrestore/flower:0.1.0 .
# Multi-stage: pip and the build happen in `build`; the runtime stages receive only the finished virtualenv.
# cpu.Dockerfile.dockerignore lets only pyproject.toml, README.md, services/ and deploy/docker/ into the context, so
# training/, export/ and the `train` extra (torch) can never reach an image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# onnxruntime 1.32.0 is what the test suite and bench/results/ ran on.
ARG ORT_VERSION=1.32.0
ARG FLOWER_VERSION=2.2.0

FROM ${PYTHON_IMAGE} AS build
ARG ORT_VERSION
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
# A regular (not editable) install: the package, its models as package data, and exactly one ONNX Runtime build.
# DL3013: the project is installed from this source tree; onnxruntime is pinned, the other dependencies
# follow pyproject.toml's bounds (pin them with a constraints file for fully reproducible images).
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[cpu]" "onnxruntime==${ORT_VERSION}" \
    && python -c "import services.cli, onnxruntime; print('onnxruntime', onnxruntime.__version__)"

# Flower gets its own copy of the environment, so the api and worker images do not carry it.
FROM build AS build-flower
ARG FLOWER_VERSION
RUN pip install --no-cache-dir "flower==${FLOWER_VERSION}"

# What every runtime image shares: a non-root user, the entrypoint that verifies the models, the health check.
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    IMGRESTORE_LOG_FORMAT=json
# A fixed numeric uid lets Kubernetes check runAsNonRoot; /work is the only writable folder besides /tmp
# (backfill reports and state files land in the working directory).
RUN groupadd --system --gid 10001 imgrestore \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin imgrestore \
    && install -d -o 10001 -g 10001 /work
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/imgrestore-entrypoint
COPY --chmod=0755 deploy/docker/healthcheck.py /usr/local/bin/imgrestore-healthcheck
WORKDIR /work
USER 10001:10001
ENTRYPOINT ["imgrestore-entrypoint"]

FROM runtime AS api
COPY --from=build /opt/venv /opt/venv
# The API runs no model: checksums are enough to catch a broken image.
ENV VERIFY_MODELS=sha256
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["imgrestore-healthcheck", "api"]
CMD ["imgrestore", "api", "--host", "0.0.0.0", "--port", "8000"]

FROM runtime AS flower
COPY --from=build-flower /opt/venv /opt/venv
ENV VERIFY_MODELS=off
EXPOSE 5555
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["imgrestore-healthcheck", "flower"]
CMD ["celery", "-A", "services.worker", "flower", "--port=5555"]

FROM runtime AS worker
COPY --from=build /opt/venv /opt/venv
# sha256 + an ONNX Runtime session + one tile per model before the worker takes jobs.
ENV VERIFY_MODELS=full
EXPOSE 9808
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 CMD ["imgrestore-healthcheck", "worker"]
CMD ["imgrestore", "worker"]
