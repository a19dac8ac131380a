#!/bin/sh
# imgrestore container entrypoint: verify the models baked into the image, then run the command as PID 1
# (exec, so SIGTERM reaches the Celery worker directly and starts its warm shutdown).
#   VERIFY_MODELS=full    sha256 + ONNX Runtime session + one tile per model (workers)
#   VERIFY_MODELS=sha256  checksums only (the API runs no model)
#   VERIFY_MODELS=off     nothing (Flower, one-off commands)
#   VERIFY_REQUIRE_PROVIDER=CUDAExecutionProvider  with full: fail unless the sessions run on that provider
set -eu

case "${VERIFY_MODELS:-full}" in
  full)
    if [ -n "${VERIFY_REQUIRE_PROVIDER:-}" ]; then
      imgrestore models verify --require-provider "$VERIFY_REQUIRE_PROVIDER"
    else
      imgrestore models verify
    fi
    ;;
  sha256)
    imgrestore models verify --checksums-only
    ;;
  off)
    ;;
  *)
    echo "imgrestore-entrypoint: VERIFY_MODELS must be full, sha256 or off, not '${VERIFY_MODELS}'" >&2
    exit 2
    ;;
esac

exec "$@"
