"""Dashboard, alert rules and autoscaling queries: valid PromQL, metric names the service really exports, and job
names that the compose Prometheus and the Kubernetes ServiceMonitors both produce."""

import json
import re

import promql_parser
import pytest
import yaml

from tests.deploy.support import DEPLOY, exported_metrics, metric_names

DASHBOARD = json.loads((DEPLOY / "grafana" / "imgrestore-dashboard.json").read_text())
ALERTS = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
RULES = {rule["alert"]: rule for group in ALERTS["groups"] for rule in group["rules"]}
JOBS = {"imgrestore-api", "imgrestore-worker"}


def queries(rendered) -> dict[str, str]:
    found = {}
    for panel in DASHBOARD["panels"]:
        for target in panel["targets"]:
            found[f"dashboard: {panel['title']} {target['refId']}"] = target["expr"]
    for name, rule in RULES.items():
        found[f"alert: {name}"] = rule["expr"]
    for overlay, docs in rendered.items():
        for doc in docs:
            if doc["kind"] == "ScaledObject":
                for trigger in doc["spec"]["triggers"]:
                    found[f"keda {overlay}: {doc['metadata']['name']}/{trigger['name']}"] = trigger["metadata"]["query"]
    return found


def test_every_query_is_valid_promql_on_metrics_the_service_exports(rendered):
    exported = exported_metrics()
    for where, expr in queries(rendered).items():
        promql_parser.parse(expr)  # raises on a syntax error
        unknown = metric_names(expr) - exported
        assert not unknown, f"{where}: {unknown}"
        for job in re.findall(r'\bjob="([^"]+)"', expr):
            assert job in JOBS, f"{where}: job {job}"


def test_the_parser_does_catch_mistakes():
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(imgrestore_jobs_total[5m])")


def test_scrape_jobs_are_named_alike_in_compose_and_kubernetes(rendered):
    compose = {job["job_name"] for job in
               yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]}
    for docs in rendered.values():
        monitors = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceMonitor"}
        assert monitors == compose == JOBS


def test_alert_rules_cover_the_issue():
    growing = RULES["ImgrestoreQueueGrowing"]
    assert "imgrestore_queue_depth" in growing["expr"] and growing["for"] == "15m"
    failing = RULES["ImgrestoreFailureRateHigh"]
    assert "[10m]" in failing["expr"] and failing["expr"].rstrip().endswith("> 0.05")
    assert 'state="failed"' in failing["expr"]
    no_workers = RULES["ImgrestoreNoWorkersWithBacklog"]
    assert 'up{job="imgrestore-worker"}' in no_workers["expr"] and "absent(" in no_workers["expr"]
    assert "imgrestore_queue_backlog" in no_workers["expr"]
    for name, rule in RULES.items():
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]


def test_dashboard_has_the_panels_the_issue_lists():
    exprs = " ".join(t["expr"] for p in DASHBOARD["panels"] for t in p["targets"])
    for needle in ("imgrestore_queue_backlog", "imgrestore_queue_depth", "imgrestore_queue_in_flight",
                   "sum by (state) (rate(imgrestore_jobs_total", "imgrestore_job_failures_total",
                   "histogram_quantile(0.5, sum by (stage, le) (rate(imgrestore_stage_seconds_bucket",
                   "histogram_quantile(0.95, sum by (stage, le) (rate(imgrestore_stage_seconds_bucket",
                   "imgrestore_megapixels_total", "imgrestore_provider_info"):
        assert needle in exprs, needle
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    # The datasource is a variable, so the same JSON works with the compose datasource and any other Grafana.
    (variable,) = DASHBOARD["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    for panel in DASHBOARD["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])


def test_redis_memory_alerts_divide_only_by_a_set_maxmemory():
    # maxmemory 0 means "no limit": dividing by it would fire (+Inf) on every Redis without one.
    for name, threshold in (("ImgrestoreRedisMemoryHigh", "0.8"), ("ImgrestoreRedisMemoryFull", "0.95")):
        expr = RULES[name]["expr"]
        assert "imgrestore_redis_memory_used_bytes" in expr and "imgrestore_redis_memory_max_bytes > 0" in expr
        assert expr.rstrip().endswith(f"> {threshold}")
