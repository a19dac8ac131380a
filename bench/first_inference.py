"""Runs ``imgrestore ARGS...`` in this process and prints, as the last stderr line, when its first inference began:
``FIRST_INFERENCE={json}`` with the wall clock (``time.time()``, for the parent that started this process), the
CPU seconds this process had used by then (all threads), the modules imported by then and which service-mode
packages were among them, and the model's load. ``bench/startup.py`` starts it; run with PYTHONPATH at the tree to
measure. Only the model's ``run`` and ``ModelRegistry._create`` are wrapped; the command runs unchanged."""

import json
import sys
import time

SERVICE_ONLY = ("celery", "kombu", "boto3", "botocore", "fastapi", "starlette", "uvicorn", "redis")


def main() -> None:
    from services.inference import registry

    stamps: dict = {}
    create, run = registry.ModelRegistry._create, registry.LoadedModel.run

    def timed_create(self, spec):
        stamps.setdefault("model_load_started_cpu_s", time.process_time())
        stamps.setdefault("model_load_started_wall", time.time())
        return create(self, spec)

    def first_run(self, batch):
        if "wall" not in stamps:
            stamps.update(wall=time.time(), cpu_s=time.process_time(), modules=len(sys.modules),
                          model_load_s=self.load_seconds, model=self.qualified_name,
                          service_only_modules=sorted({m.split(".")[0] for m in sys.modules} & set(SERVICE_ONLY)))
        return run(self, batch)

    registry.ModelRegistry._create, registry.LoadedModel.run = timed_create, first_run
    from services.cli import main as cli_main

    sys.argv[0] = "imgrestore"
    try:
        cli_main()
    finally:
        print("FIRST_INFERENCE=" + json.dumps(stamps), file=sys.stderr)


if __name__ == "__main__":
    main()
