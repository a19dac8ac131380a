"""deploy/compose*.yaml: valid against the Compose Specification schema (vendored), and consistent with the images,
the CLI, the settings and the Prometheus / Grafana files it mounts."""

import ast
import copy
import importlib.util
import re

import pytest
import yaml

from tests.deploy.support import (
    DEPLOY,
    ROOT,
    check_worker_queues,
    dockerfile_stages,
    parse_cli,
    parse_settings,
    schema_errors,
    settings_env_names,
)

COMPOSE = DEPLOY / "compose.yaml"
GPU = DEPLOY / "compose.gpu.yaml"
INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")


def interpolate(value, env: dict[str, str]):
    """Compose's variable substitution (${VAR}, ${VAR:-default}, ${VAR-default}, $$), applied to every string."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match):
        if match.group(0) == "$$":
            return "$"
        name, kind, default = match.groups()
        if name in env and (env[name] or kind != ":-"):
            return env[name]
        return default or ""

    return INTERPOLATION.sub(substitute, value)


def load(path, env=None) -> dict:
    return interpolate(yaml.safe_load(path.read_text()), env or {})


def merge(base, override):
    """Compose's merge of an override file, for the mappings used here (lists of devices are replaced)."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base[key], value) if key in base else value
        return merged
    return copy.deepcopy(override)


@pytest.fixture(scope="module")
def stack():
    return load(COMPOSE)


@pytest.fixture(scope="module")
def gpu_stack(stack):
    return merge(stack, load(GPU))


def duration_seconds(text: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, text
    return sum(float(n) * units[u] for n, u in parts)


def environment(service: dict) -> dict:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping"
    return env


@pytest.mark.parametrize("name", ["compose.yaml", "compose.gpu.yaml", "merged"])
def test_compose_files_match_the_compose_spec(stack, gpu_stack, name):
    document = {"compose.yaml": stack, "compose.gpu.yaml": load(GPU), "merged": gpu_stack}[name]
    assert not schema_errors("compose-spec.json", document)


def test_the_spec_schema_rejects_mistakes(stack):
    broken = copy.deepcopy(stack)
    broken["services"]["worker"]["stop_grace_periode"] = "10m"
    assert schema_errors("compose-spec.json", broken)
    broken = copy.deepcopy(stack)
    broken["services"]["api"]["depends_on"]["redis"]["condition"] = "service_ready"
    assert schema_errors("compose-spec.json", broken)


def test_interpolation_follows_compose_rules():
    raw = {"a": "${X:-d}", "b": "${X-d}", "c": "$${X}", "d": "${Y}"}
    assert interpolate(raw, {"X": ""}) == {"a": "d", "b": "", "c": "${X}", "d": ""}
    assert interpolate(raw, {"X": "v", "Y": "w"}) == {"a": "v", "b": "v", "c": "${X}", "d": "w"}


def test_the_stack_the_issue_asks_for(stack):
    services = stack["services"]
    assert {"redis", "minio", "minio-setup", "api", "worker", "flower", "prometheus", "grafana"} <= set(services)
    redis = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis and "--maxmemory-policy noeviction" in redis
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    setup = services["minio-setup"]["command"][0]
    assert 'mc mb --ignore-existing "local/$BUCKET"' in setup
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["minio-setup"]["condition"] == "service_completed_successfully"
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"
        if "image" in service:
            assert ":" in service["image"] and not service["image"].endswith(":latest"), service["image"]


@pytest.mark.parametrize("name", ["api", "worker", "flower"])
def test_imgrestore_services_build_the_deploy_images(stack, name):
    build = stack["services"][name]["build"]
    assert (DEPLOY / build["context"]).resolve() == ROOT
    assert build["target"] in dockerfile_stages(ROOT / build["dockerfile"])
    assert build["dockerfile"] == "deploy/docker/cpu.Dockerfile"


def test_commands_are_the_cli_the_tests_exercise(stack):
    services = stack["services"]
    worker = parse_cli(services["worker"]["command"])
    assert sorted(check_worker_queues(worker)) == ["colorize", "denoise", "watermark"]
    api = parse_cli(services["api"]["command"])
    assert api.params["host"] == "0.0.0.0"
    assert services["api"]["ports"] == [f"127.0.0.1:{api.params['port']}:{api.params['port']}"]
    # Flower: `celery -A services.worker flower`, and services.worker defines the Celery app it loads.
    assert services["flower"]["command"][:4] == ["celery", "-A", "services.worker", "flower"]
    spec = importlib.util.find_spec("services.worker")
    tree = ast.parse(open(spec.origin).read())
    assert any(isinstance(node, ast.ImportFrom) and any(a.name == "app" for a in node.names) for node in tree.body)


def test_environment_holds_real_settings_with_valid_values(stack, gpu_stack):
    known = settings_env_names()
    for name in ("api", "worker", "flower"):
        for document in (stack, gpu_stack):
            env = environment(document["services"][name])
            assert set(env) <= known | {"FLOWER_BASIC_AUTH"}, set(env) - known
            # Values given (None = passed through from the shell when set there) parse as the service would.
            parse_settings({k: v for k, v in env.items() if v is not None and k in known})
    api = environment(stack["services"]["api"])
    assert api["IMGRESTORE_API_TOKENS"] is None and api["IMGRESTORE_CALLBACK_SECRET"] is None
    assert environment(stack["services"]["worker"])["IMGRESTORE_S3_ADDRESSING_STYLE"] == "path"  # MinIO


def test_worker_stop_grace_outlasts_its_longest_job(stack, gpu_stack):
    for document in (stack, gpu_stack):
        worker = document["services"]["worker"]
        longest = float(environment(worker)["IMGRESTORE_WORKER_SOFT_SHUTDOWN_TIMEOUT"])
        # docker stop's default is 10 s, which would kill a running job and leave it to the redelivery timeout.
        assert duration_seconds(worker["stop_grace_period"]) >= longest + 30
        assert "stop_signal" not in worker  # SIGTERM: Celery's warm shutdown


def test_gpu_override_reserves_one_gpu_for_the_gpu_image(gpu_stack):
    worker = gpu_stack["services"]["worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and len(device["device_ids"]) == 1
    assert worker["build"]["dockerfile"] == "deploy/docker/gpu.Dockerfile"
    assert worker["build"]["target"] in dockerfile_stages(ROOT / worker["build"]["dockerfile"])
    assert worker["image"].startswith("imgrestore/worker-gpu:")
    env = environment(worker)
    assert env["IMGRESTORE_WORKER_CONCURRENCY"] == "1"
    assert env["IMGRESTORE_PROVIDERS"].split(",")[0] == "CUDAExecutionProvider"
    assert worker["command"] == load(COMPOSE)["services"]["worker"]["command"]


def test_mounted_files_exist(stack):
    for name, service in stack["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"


def test_prometheus_scrapes_the_api_and_every_worker(stack):
    services = stack["services"]
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"imgrestore-api", "imgrestore-worker"}
    api_port = parse_cli(services["api"]["command"]).params["port"]
    assert jobs["imgrestore-api"]["static_configs"][0]["targets"] == [f"api:{api_port}"]
    (discovery,) = jobs["imgrestore-worker"]["dns_sd_configs"]
    assert discovery["names"] == ["worker"] and discovery["type"] == "A"
    assert discovery["port"] == int(environment(services["worker"])["IMGRESTORE_METRICS_PORT"])
    assert discovery["port"] == parse_settings({}).metrics_port  # the service's default
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"] if v.startswith(".")}
    for rule_file in config["rule_files"]:
        assert mounts[rule_file] == "./prometheus/alerts.yaml"


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(stack):
    services = stack["services"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"] if v.startswith(".")}
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    (source,) = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "prometheus" in services
    (provider,) = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/imgrestore.yaml").read_text())["providers"]
    dashboards = [target for target, src in mounts.items() if src == "./grafana/imgrestore-dashboard.json"]
    assert dashboards and dashboards[0].startswith(provider["options"]["path"] + "/")
