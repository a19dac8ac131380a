"""deploy/k8s: every kustomization renders, validates against Kubernetes / KEDA / Prometheus Operator schemas offline,
and agrees with the service (settings, CLI, queues, metrics) and with the scaling and shutdown rules of the issue."""

import re

import pytest

from tests.deploy.kustomize_lite import containers, pod_specs, split_image
from tests.deploy.support import (
    K8S,
    K8S_VERSIONS,
    KUSTOMIZATIONS,
    check_worker_queues,
    kubernetes_errors,
    parse_cli,
    parse_settings,
    schema_errors,
    settings_env_names,
    yaml_docs,
)

OVERLAYS = list(KUSTOMIZATIONS)
EXAMPLES = sorted((K8S / "examples").glob("*.yaml"))
WORKLOADS = {"Deployment", "StatefulSet", "Job"}
DEPLOY_ONLY_ENV = {"VERIFY_MODELS", "VERIFY_REQUIRE_PROVIDER"}  # read by deploy/docker/entrypoint.sh


def of_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def named(docs, kind, name):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are used here"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def template_labels(doc):
    return doc["spec"]["template"]["metadata"]["labels"]


def workers(docs):
    return [d for d in of_kind(docs, "Deployment") if d["metadata"]["labels"].get("app.kubernetes.io/component")
            == "worker"]


def env_of(container, docs) -> dict[str, str]:
    """The container's environment as the pod gets it: envFrom (ConfigMaps, Secrets) then env, which wins."""
    env = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(named(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            env.update(named(docs, "Secret", source["secretRef"]["name"])["stringData"])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def prestop_seconds(container) -> int:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, command
    return int(command[1])


def worker_queue(doc) -> str:
    (queue,) = check_worker_queues(parse_cli(doc["spec"]["template"]["spec"]["containers"][0]["args"]))
    return queue


# --- schemas ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_manifest_matches_the_schemas(rendered, overlay, version):
    errors = {f"{d['kind']}/{d['metadata']['name']}": kubernetes_errors(d, version) for d in rendered[overlay]}
    assert not {k: v for k, v in errors.items() if v}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_match_the_schemas_and_run_the_cli(rendered, path):
    for doc in yaml_docs(path):
        for version in K8S_VERSIONS:
            assert not kubernetes_errors(doc, version)
        for container in containers(doc):
            parse_cli(container["args"])
            env_of(container, rendered["base"])  # every ConfigMap/Secret it names exists


def test_the_validators_do_reject_mistakes(rendered):
    import copy

    deployment = copy.deepcopy(workers(rendered["base"])[0])
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 600  # misspelt
    assert kubernetes_errors(deployment, K8S_VERSIONS[0])
    scaled = copy.deepcopy(of_kind(rendered["base"], "ScaledObject")[0])
    scaled["spec"]["maxReplicas"] = 3  # HPA's name, not KEDA's
    assert kubernetes_errors(scaled, K8S_VERSIONS[0])
    monitor = copy.deepcopy(of_kind(rendered["base"], "ServiceMonitor")[0])
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    assert kubernetes_errors(monitor, K8S_VERSIONS[0])
    assert schema_errors("crds/keda-prometheus-trigger-metadata.json",
                         {"serverAddress": "http://p:9090", "query": "up", "threshold": "1", "ignoreNullValue": "x"})


# --- what the issue asks for --------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pieces_are_all_there(rendered, overlay):
    docs = rendered[overlay]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for kind, name in [("Deployment", "imgrestore-api"), ("Service", "imgrestore-api"),
                       ("PodDisruptionBudget", "imgrestore-api"), ("ConfigMap", "imgrestore-settings"),
                       ("Secret", "imgrestore-common"), ("Secret", "imgrestore-api"),
                       ("ServiceMonitor", "imgrestore-api"), ("ServiceMonitor", "imgrestore-worker"),
                       ("Service", "imgrestore-worker")]:
        assert (kind, name) in kinds
    from services.jobs import Task

    assert sorted(worker_queue(d) for d in workers(docs)) == sorted(t.value for t in Task)
    for worker in workers(docs):
        name = worker["metadata"]["name"]
        assert ("ScaledObject", name) in kinds and ("PodDisruptionBudget", name) in kinds
    assert (("StatefulSet", "imgrestore-redis") in kinds) == (overlay == "small")
    assert (("Ingress", "imgrestore-api") in kinds) == (overlay == "gpu")
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    assert namespaces == {"imgrestore"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_references_resolve(rendered, overlay):
    docs = rendered[overlay]
    pods = [d for d in docs if d["kind"] in WORKLOADS]
    for workload in pods:
        if workload["kind"] != "Job":
            assert selects(workload["spec"]["selector"], template_labels(workload))
        for pod in pod_specs(workload):
            if "serviceAccountName" in pod:
                named(docs, "ServiceAccount", pod["serviceAccountName"])
        for container in containers(workload):
            env_of(container, docs)
    for service in of_kind(docs, "Service"):
        backends = [w for w in pods if selects({"matchLabels": service["spec"]["selector"]}, template_labels(w))]
        assert backends, f"Service {service['metadata']['name']} selects no pods"
        port_names = {p["name"] for w in backends for c in containers(w) for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names
    for monitor in of_kind(docs, "ServiceMonitor"):
        services = [s for s in of_kind(docs, "Service")
                    if selects(monitor["spec"]["selector"], s["metadata"]["labels"])]
        assert len(services) == 1, monitor["metadata"]["name"]
        # Prometheus Operator names the job after the Service: alerts.yaml and the dashboard rely on these names.
        assert services[0]["metadata"]["name"] == monitor["metadata"]["name"]
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in {p["name"] for p in services[0]["spec"]["ports"]}
    for budget in of_kind(docs, "PodDisruptionBudget"):
        assert len([w for w in pods if selects(budget["spec"]["selector"], template_labels(w))]) == 1
    for scaled in of_kind(docs, "ScaledObject"):
        ref = scaled["spec"]["scaleTargetRef"]
        assert (ref.get("apiVersion"), ref.get("kind")) == ("apps/v1", "Deployment")
        named(docs, "Deployment", ref["name"])
    for ingress in of_kind(docs, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                service = named(docs, "Service", backend["name"])
                assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}


# --- autoscaling --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_scaledobject_per_queue_scaling_on_queued_plus_in_flight(rendered, overlay):
    docs = rendered[overlay]
    settings = parse_settings(named(docs, "ConfigMap", "imgrestore-settings")["data"])
    watched = set()
    for worker in workers(docs):
        name = worker["metadata"]["name"]
        scaled = named(docs, "ScaledObject", name)
        spec = scaled["spec"]
        assert "replicas" not in worker["spec"], "KEDA owns the replica count"
        assert spec["minReplicaCount"] == 0 and spec["maxReplicaCount"] >= 1
        assert spec["cooldownPeriod"] >= 60
        assert spec["fallback"]["replicas"] >= 1
        scale_down = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
        assert scale_down["stabilizationWindowSeconds"] >= 60
        queue = settings.queue_for(worker_queue(worker))
        concurrency = int(env_of(worker["spec"]["template"]["spec"]["containers"][0], docs)
                          ["IMGRESTORE_WORKER_CONCURRENCY"])
        queues = []
        for trigger in spec["triggers"]:
            # Never Redis list length: it does not see reserved/executing jobs (the `unacked` hash).
            assert trigger["type"] == "prometheus"
            meta = trigger["metadata"]
            assert not schema_errors("crds/keda-prometheus-trigger-metadata.json", meta)
            match = re.fullmatch(r'max\(imgrestore_queue_backlog\{namespace="([^"]+)",queue="([^"]+)"\}\)',
                                 meta["query"])
            assert match, meta["query"]
            assert match.group(1) == scaled["metadata"]["namespace"]
            queues.append(match.group(2))
            assert meta["ignoreNullValues"] == "false"  # no data must not read as "no work"
            assert float(meta["activationThreshold"]) == 0
        assert queues[0] == queue, "the first trigger is the Deployment's own queue"
        assert float(spec["triggers"][0]["metadata"]["threshold"]) >= concurrency
        watched.update(queues)
    assert settings.control_queue in watched, "some workers must wake for control tasks when all are at zero"


def test_max_replicas_are_set_per_overlay(rendered):
    maxima = {name: {s["spec"]["maxReplicaCount"] for s in of_kind(docs, "ScaledObject")}
              for name, docs in rendered.items()}
    assert maxima == {"base": {10}, "small": {2}, "gpu": {8}}


# --- shutdown -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_outlive_their_longest_job(rendered, overlay):
    for worker in workers(rendered[overlay]):
        longest = int(worker["metadata"]["annotations"]["imgrestore.io/longest-job-seconds"])
        pod = worker["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = env_of(container, rendered[overlay])
        prestop = prestop_seconds(container)
        assert prestop <= 30, "preStop only lets the endpoints deregister; SIGTERM starts the warm shutdown"
        assert pod["terminationGracePeriodSeconds"] >= longest + prestop + 30
        assert float(env["IMGRESTORE_WORKER_SOFT_SHUTDOWN_TIMEOUT"]) >= longest
        # The visibility timeout does not need to cover the job (leases are renewed): keep redelivery fast.
        assert int(env["IMGRESTORE_VISIBILITY_TIMEOUT"]) < longest


# --- agreement with the service -----------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_are_real_settings_with_valid_values(rendered, overlay):
    docs = rendered[overlay]
    known = settings_env_names()
    for config in of_kind(docs, "ConfigMap") + of_kind(docs, "Secret"):
        keys = set(config.get("data", {}) | config.get("stringData", {}))
        assert keys <= known, f"{config['metadata']['name']}: not settings: {keys - known}"
    for workload in [d for d in docs if d["kind"] in WORKLOADS]:
        for container in containers(workload):
            if not container["image"].startswith("imgrestore/"):
                continue
            env = env_of(container, docs)
            assert set(env) <= known | DEPLOY_ONLY_ENV, set(env) - known - DEPLOY_ONLY_ENV
            parse_settings(env)  # every value parses (types, ranges, enums, the API tokens' JSON shape)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_in_the_repository_are_placeholders(rendered, overlay):
    for secret in of_kind(rendered[overlay], "Secret"):
        for key, value in secret["stringData"].items():
            if overlay == "small" and key == "IMGRESTORE_REDIS_URL":
                assert value == "redis://imgrestore-redis:6379/0"  # the in-cluster Redis, reachable only by us
            else:
                assert "CHANGE-ME" in value, key
    redis_url = named(rendered["base"], "Secret", "imgrestore-common")["stringData"]["IMGRESTORE_REDIS_URL"]
    assert redis_url.startswith("rediss://") and "ssl_cert_reqs=" in redis_url  # Celery refuses rediss without it


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_containers_run_the_cli_through_the_verifying_entrypoint(rendered, overlay):
    docs = rendered[overlay]
    for workload in [d for d in docs if d["kind"] in WORKLOADS]:
        for container in containers(workload):
            if not container["image"].startswith("imgrestore/"):
                continue
            assert "command" not in container, "command would bypass the entrypoint's model verification"
            env = env_of(container, docs)
            ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            ctx = parse_cli(container["args"])
            if ctx.info_name == "worker":
                check_worker_queues(ctx)
                assert ports["metrics"] == int(env["IMGRESTORE_METRICS_PORT"])
            if ctx.info_name == "api":
                assert ports["http"] == ctx.params["port"] and ctx.params["host"] == "0.0.0.0"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_as_the_images_non_root_user_on_a_read_only_root(rendered, overlay):
    for workload in [d for d in rendered[overlay] if d["kind"] in WORKLOADS]:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in containers(workload):
            name, tag, _ = split_image(container["image"])
            assert tag and tag != "latest", container["image"]
            if name.startswith("imgrestore/"):
                assert pod["securityContext"]["runAsUser"] == 10001  # USER in deploy/docker/*.Dockerfile
                assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
            assert security["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def cpu_cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_threads_fit_their_resources(rendered, overlay):
    for worker in workers(rendered[overlay]):
        (container,) = worker["spec"]["template"]["spec"]["containers"]
        env = env_of(container, rendered[overlay])
        processes, threads = int(env["IMGRESTORE_WORKER_CONCURRENCY"]), int(env["IMGRESTORE_INTRA_OP_THREADS"])
        requests = container["resources"]["requests"]
        assert threads >= 1, "0 lets ONNX Runtime size its pool from the node's cores, not the pod's"
        assert processes * threads <= cpu_cores(requests["cpu"])
        if "nvidia.com/gpu" in requests:
            assert processes == int(requests["nvidia.com/gpu"]), "one worker process per GPU"


def test_gpu_overlay_puts_each_worker_on_a_gpu_node(rendered):
    base = {d["metadata"]["name"]: d for d in workers(rendered["base"])}
    for worker in workers(rendered["gpu"]):
        pod = worker["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        resources = container["resources"]
        assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert split_image(container["image"])[0] == "imgrestore/worker-gpu"
        assert worker["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
        base_container = base[worker["metadata"]["name"]]["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == base_container["args"]
    api = named(rendered["gpu"], "Deployment", "imgrestore-api")["spec"]["template"]["spec"]
    assert "nodeSelector" not in api and split_image(api["containers"][0]["image"])[0] == "imgrestore/api"
    assert not any("nvidia.com/gpu" in c["resources"]["requests"] for d in workers(rendered["base"])
                   for c in containers(d))


def test_small_overlay_runs_redis_with_aof_and_only_imgrestore_can_reach_it(rendered):
    docs = rendered["small"]
    redis = named(docs, "StatefulSet", "imgrestore-redis")
    args = " ".join(redis["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "--appendonly yes" in args and "--maxmemory-policy noeviction" in args
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    service = named(docs, "Service", "imgrestore-redis")
    url = named(docs, "Secret", "imgrestore-common")["stringData"]["IMGRESTORE_REDIS_URL"]
    assert url == f"redis://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/0"
    policy = named(docs, "NetworkPolicy", "imgrestore-redis")
    allowed = policy["spec"]["ingress"][0]["from"][0]["podSelector"]
    for workload in [d for d in docs if d["kind"] in WORKLOADS and d["metadata"]["name"] != "imgrestore-redis"]:
        assert selects(allowed, template_labels(workload)), workload["metadata"]["name"]
