"""deploy/README.md stays true: its files exist, its settings are settings, its commands parse with the real CLI."""

import re
import shlex

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


def test_sizing_table_points_at_the_benchmarks():
    sizing = README.split("## Sizing", 1)[1].split("\n## ", 1)[0]
    assert "**To be measured.**" in sizing and "bench/results/" in sizing
    for cited in re.findall(r"`([a-z_]+\.md)`", sizing):
        assert (ROOT / "bench" / "results" / cited).is_file(), cited
    assert "_to be measured_" in sizing
