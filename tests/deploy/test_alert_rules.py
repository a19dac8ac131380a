"""deploy/prometheus/alerts.yaml has the structure Prometheus' rule loader (rulefmt) accepts: checked against a
vendored schema of the rule-file format (no promtool here), plus the checks rulefmt makes beyond the shape."""

import copy
import re

import pytest
import yaml

from tests.deploy.support import DEPLOY, schema_errors

RULE_FILE = DEPLOY / "prometheus" / "alerts.yaml"
SCHEMA = "prometheus-rule-file.json"


@pytest.fixture(scope="module")
def rule_file() -> dict:
    return yaml.safe_load(RULE_FILE.read_text())


def test_the_rule_file_matches_the_rule_file_format(rule_file):
    assert schema_errors(SCHEMA, rule_file) == []


def test_names_are_unique_and_templates_balanced(rule_file):
    groups = [g["name"] for g in rule_file["groups"]]
    assert len(groups) == len(set(groups)), "rulefmt refuses a file with two groups of the same name"
    for group in rule_file["groups"]:
        alerts = [r["alert"] for r in group["rules"] if "alert" in r]
        assert len(alerts) == len(set(alerts)), group["name"]
        for rule in group["rules"]:
            for text in [*rule.get("labels", {}).values(), *rule.get("annotations", {}).values()]:
                assert text.count("{{") == text.count("}}"), f"{rule.get('alert')}: unbalanced template in {text!r}"


def test_templates_only_name_labels_the_expression_keeps(rule_file):
    # An aggregation keeps only its `by (...)` labels: {{ $labels.queue }} on a result without `queue` is blank.
    for group in rule_file["groups"]:
        for rule in group["rules"]:
            kept = {name.strip() for by in re.findall(r"\bby\s*\(([^)]*)\)", rule["expr"]) for name in by.split(",")}
            texts = " ".join([*rule.get("labels", {}).values(), *rule.get("annotations", {}).values()])
            used = set(re.findall(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)", texts))
            assert used <= kept, f"{rule['alert']}: templates use {used - kept}, the expression keeps {kept}"


@pytest.mark.parametrize("mistake", ["misspelt key", "bad duration", "alert and record", "no expr",
                                     "bad label name", "unknown group key"])
def test_the_schema_catches_mistakes(rule_file, mistake):
    broken = copy.deepcopy(rule_file)
    rule = broken["groups"][0]["rules"][0]
    if mistake == "misspelt key":
        rule["annotation"] = rule.pop("annotations")
    elif mistake == "bad duration":
        rule["for"] = "15 min"
    elif mistake == "alert and record":
        rule["record"] = "imgrestore:queue_depth:max"
    elif mistake == "no expr":
        del rule["expr"]
    elif mistake == "bad label name":
        rule["labels"]["team-name"] = "ops"
    elif mistake == "unknown group key":
        broken["groups"][0]["evaluation_interval"] = "1m"
    assert schema_errors(SCHEMA, broken), mistake
