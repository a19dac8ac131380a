#!/opt/venv/bin/python
"""Container health check (Dockerfile HEALTHCHECK): one GET on this container's own HTTP endpoint.

imgrestore-healthcheck api|worker|flower: the API's /healthz, the worker's metrics endpoint (served by the Celery
main process, so it answers while the worker is alive), Flower's /healthcheck. Exit 0 when it answers 2xx.
"""

import os
import sys
import urllib.request

TARGETS = {
    "api": ("IMGRESTORE_API_PORT", "8000", "/healthz"),
    "worker": ("IMGRESTORE_METRICS_PORT", "9808", "/metrics"),
    "flower": ("FLOWER_PORT", "5555", "/healthcheck"),
}


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] not in TARGETS:
        print(f"usage: imgrestore-healthcheck {'|'.join(TARGETS)}", file=sys.stderr)
        return 2
    variable, default, path = TARGETS[sys.argv[1]]
    port = os.environ.get(variable) or default
    if port == "0":  # IMGRESTORE_METRICS_PORT=0 turns the worker endpoint off: nothing to ask
        print(f"{variable}=0: no endpoint to check")
        return 0
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=4) as response:
            return 0 if 200 <= response.status < 300 else 1
    except OSError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
