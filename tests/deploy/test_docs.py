"""deploy/README.md stays true: its files exist, its settings are settings, its commands parse with the real CLI."""

import json
import re
import shlex
import statistics

from tests.deploy.support import DEPLOY, ROOT, parse_cli, settings_env_names

README = (DEPLOY / "README.md").read_text()
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", README, re.S)


def test_topology_is_drawn():
    (mermaid,) = [body for lang, body in BLOCKS if lang == "mermaid"]
    for node in ("api", "redis", "s3", "prom", "keda", "grafana", "flower"):
        assert re.search(rf"\b{node}\b", mermaid), node


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
