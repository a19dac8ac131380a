"""What the deploy tests share: paths, YAML loading, schema validators, the CLI parser and the service's facts
(settings names, exported metrics) that deploy/ must agree with."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import click
import dockerfile
import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SCHEMAS = DEPLOY / "schemas"
KUSTOMIZATIONS = {"base": K8S / "base", "small": K8S / "overlays" / "small", "gpu": K8S / "overlays" / "gpu"}
# The oldest Kubernetes the manifests claim to support and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.30.0", "1.37.0")
CUSTOM_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "crds/keda.sh_v1alpha1_scaledobject.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "crds/monitoring.coreos.com_v1_servicemonitor.json",
}


def yaml_docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(Path(path).read_text()) if doc]


# --- Dockerfiles (parsed by BuildKit's own parser, via the `dockerfile` package) ---------------------------------
@functools.cache
def instructions(path: Path) -> tuple:
    return dockerfile.parse_file(str(path))


@functools.cache
def dockerfile_stages(path: Path) -> dict[str, dict]:
    """{stage: {"from": base, "lines": [Command, ...]}} in file order; global ARGs under the key None."""
    stages: dict = {None: {"from": None, "lines": []}}
    current = None
    for line in instructions(path):
        if line.cmd == "FROM":
            base, _as, current = line.value
            stages[current] = {"from": base, "lines": []}
        else:
            stages[current]["lines"].append(line)
    return stages


# --- schemas ------------------------------------------------------------------------------------------------------
# The vendored compose schema names its dialect "http://json-schema.org/draft/2019-09/schema#", a spelling
# jsonschema does not look up: say it here instead of editing the copied file.
DIALECTS = {"compose-spec.json": jsonschema.Draft201909Validator}


@functools.cache
def schema_validator(relative: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / relative).read_text())
    cls = DIALECTS.get(relative) or jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def schema_errors(relative: str, instance) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in schema_validator(relative).iter_errors(instance)]


def kubernetes_errors(doc: dict, version: str) -> list[str]:
    """Strict validation: kubernetes-validate's schemas for built-in kinds, deploy/schemas/crds for KEDA/Prometheus."""
    custom = CUSTOM_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if custom:
        return schema_errors(custom, doc)
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'/'.join(map(str, exc.path))}: {exc.message}"]
    return []


# --- the service's own facts --------------------------------------------------------------------------------------
def settings_env_names() -> set[str]:
    from services.config import Settings

    return {f"IMGRESTORE_{name.upper()}" for name in Settings.model_fields}


def parse_settings(env: dict[str, str]):
    """Settings built from IMGRESTORE_* values exactly as given (raises pydantic's ValidationError on a bad one)."""
    from services.config import Settings

    fields = {key.removeprefix("IMGRESTORE_").lower(): value for key, value in env.items()
              if key.startswith("IMGRESTORE_")}
    return Settings(**fields)


def parse_cli(argv: list[str]) -> click.Context:
    """Parses a container's command line the way `imgrestore` would (options, types, choices); runs nothing."""
    from services.cli import cli

    if not argv or argv[0] != "imgrestore":
        raise ValueError(f"not an imgrestore command line: {argv}")
    command: click.Command = cli
    name, args = "imgrestore", list(argv[1:])
    while isinstance(command, click.Group):
        if not args:
            raise click.UsageError(f"`{name}` needs a subcommand")
        sub = command.get_command(click.Context(command), args[0])
        if sub is None:
            raise click.UsageError(f"`{name}` has no subcommand {args[0]!r}")
        name, command, args = args[0], sub, args[1:]
    return command.make_context(name, args)


def check_worker_queues(ctx: click.Context) -> list[str]:
    from services.jobs import Task

    queues = [q.strip() for q in ctx.params["queues"].split(",") if q.strip()]
    unknown = [q for q in queues if q not in {t.value for t in Task}]
    assert queues and not unknown, f"unknown worker queues: {unknown}"
    return queues


@functools.cache
def exported_metrics() -> frozenset[str]:
    """Sample names the service exposes: worker metrics (services.metrics) and the API's (requests, queue gauges)."""
    from prometheus_client.metrics import MetricWrapperBase

    from services import metrics
    from services.api.observability import ApiMetrics
    from services.queue.job_store import JobStore

    class NoQueues:  # a Redis with empty queues
        def llen(self, _):
            return 0

        def hscan_iter(self, *_, **__):
            return iter(())

        def register_script(self, _):
            return None

    api = ApiMetrics(JobStore(NoQueues()), ["q"])
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    names = set()
    for value in [*vars(metrics).values(), *vars(api).values()]:
        if isinstance(value, MetricWrapperBase):
            names.update(value._name + suffix for suffix in suffixes[value._type])
    names.update(family.name for family in api.registry.collect() if family.type == "gauge")
    return frozenset(names)


METRIC_NAME = re.compile(r"\bimgrestore_[a-z0-9_]+\b")


def metric_names(promql: str) -> set[str]:
    return set(METRIC_NAME.findall(promql))
