"""deploy/README.md stays true: its files exist, its settings are settings, its commands parse with the real CLI."""

import json
import re
import shlex
import statistics

from services.config import Settings
from services.jobs import Task
from tests.deploy.support import DEPLOY, ROOT, parse_cli, settings_env_names

README = (DEPLOY / "README.md").read_text()
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", README, re.S)


ARROW = re.compile(r"\s*(?:<-->|-\.->|-->)\s*(?:\|([^|]*)\|)?\s*")
NODE = re.compile(r"^(\w+)(?:\(?\[\(?(.*?)\)?\]\)?)?$")


def topology() -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """The README's mermaid flowchart as node labels by id and (source, label, target) edges."""
    (mermaid,) = [body for lang, body in BLOCKS if lang == "mermaid"]
    labels: dict[str, str] = {}
    edges = []
    for line in mermaid.splitlines()[1:]:
        parts = ARROW.split(line.strip())  # [nodes, label, nodes, label, nodes ...]
        ids = []
        for side in parts[0::2]:
            side_ids = []
            for ref in side.split("&"):
                node = NODE.match(ref.strip())
                assert node, f"unparsed node {ref!r} in {line!r}"
                side_ids.append(node[1])
                if node[2]:
                    labels[node[1]] = node[2]
            ids.append(side_ids)
        for (sources, label, targets) in zip(ids, parts[1::2], ids[1:]):
            edges += [(a, label or "", b) for a in sources for b in targets]
    return labels, edges


def test_the_topology_drawn_is_what_the_manifests_deploy(rendered):
    """Each queue the diagram routes to a worker pool is a queue the service uses and that pool's Deployment
    consumes; Prometheus scrapes the port the workers serve metrics on; KEDA scales each pool on the metric its
    ScaledObject queries."""
    labels, edges = topology()
    defaults = Settings()
    deployments = {d["metadata"]["name"]: d for d in rendered["base"] if d["kind"] == "Deployment"}
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in rendered["base"] if d["kind"] == "ScaledObject"}
    routed = {label: target for source, label, target in edges if source == "redis" and label.startswith("imgrestore.")}
    assert set(routed) == {defaults.queue_for(task.value) for task in Task}
    for queue, node in routed.items():
        task = queue.removeprefix(defaults.queue_prefix)
        deployment = deployments[f"imgrestore-worker-{task}"]
        assert f"worker-{task}" in labels[node], (node, labels[node])
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        args = container["args"]
        assert args[args.index("--queues") + 1] == task, args
        (scrape,) = [label for source, label, target in edges if source == "prom" and target == node]
        port = int(re.search(r":(\d+)/metrics", scrape)[1])
        assert port == defaults.metrics_port
        assert {"name": "metrics", "containerPort": port} == {k: v for k, v in container["ports"][0].items()
                                                               if k in ("name", "containerPort")}
        (scaling,) = [label for source, label, target in edges if source == "keda" and target == "prom"]
        metric = scaling.split()[0]
        queries = [t["metadata"]["query"] for t in scaled[deployment["metadata"]["name"]]["spec"]["triggers"]]
        assert any(metric in q and f'queue="{queue}"' in q for q in queries), (metric, queries)
        assert ("keda", "replicas 0..max", node) in edges


PATH = re.compile(r"`((?:deploy/|k8s/|docker/|prometheus/|grafana/|schemas/|bench/)[^`\s<>{}*]*)`")


def test_files_it_names_exist():
    for path in set(PATH.findall(README)):
        candidates = [ROOT / path, DEPLOY / path]
        assert any(c.exists() for c in candidates), path


def test_settings_it_names_are_settings():
    named = set(re.findall(r"\bIMGRESTORE_[A-Z0-9_]*[A-Z0-9]\b(?!_\*)", README))
    assert named and named <= settings_env_names(), named - settings_env_names()


def test_imgrestore_commands_parse():
    commands = 0
    for lang, body in BLOCKS:
        if lang != "bash":
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("imgrestore "):
                parse_cli(shlex.split(line))
                commands += 1
    assert commands >= 3


def test_sizing_comes_from_the_benchmark_results():
    sizing = README.split("## Sizing", 1)[1].split("\n## ", 1)[0]
    cited = re.findall(r"`([a-z_]+\.md)`", sizing)
    assert {"service_overhead.md", "model_speed.md", "throughput.md", "memory.md"} <= set(cited)
    for name in cited:
        assert (ROOT / "bench" / "results" / name).is_file(), name
    # The CPU row restates service_overhead.json: a rerun of the benchmark must be carried into this table.
    overhead = json.loads((ROOT / "bench" / "results" / "service_overhead.json").read_text())
    seconds = statistics.median(overhead["end_to_end_seconds"])  # the runs; the bench reports their median
    row = next(line for line in sizing.splitlines() if "doc-denoise, 1 MP page" in line)
    assert f"{1 / seconds:.1f} ({seconds:.3g} s end to end)" in row, (row, seconds)
    gpu_measured = any((ROOT / "bench" / "results").glob("gpu*.json"))
    gpu_row = next(line for line in sizing.splitlines() if line.startswith("| 1 GPU"))
    assert ("_not measured_" in gpu_row) != gpu_measured, gpu_row
