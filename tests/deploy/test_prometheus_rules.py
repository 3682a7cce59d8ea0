"""The alert rules pass Prometheus's own checks and unit tests, each has a runbook, and the
dashboard shows what the issue asks an operator to see at a glance."""

from __future__ import annotations

import json
import re

from tests.deploy.tools import (
    ALERTS,
    DASHBOARD,
    DEPLOY,
    REPO,
    dashboard_expressions,
    metric_names,
    promtool,
    yaml_documents,
)

ALERT_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
RULES = [rule for group in yaml_documents(ALERTS)[0]["groups"] for rule in group["rules"]]


def test_promtool_checks_the_alert_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested_and_has_a_runbook() -> None:
    tested = {
        case["alertname"]
        for test in yaml_documents(ALERT_TESTS)[0]["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    runbook = (REPO / "docs" / "OBSERVABILITY.md").read_text()
    for rule in RULES:
        assert rule["alert"] in tested, f"{rule['alert']} never fires in alerts_test.yml"
        assert f"### {rule['alert']}" in runbook, f"{rule['alert']} has no runbook entry"
        assert rule["labels"]["severity"] in {"page", "ticket"}
        assert {"summary", "description"} <= set(rule["annotations"])


def test_the_issue_asks_for_these_alerts() -> None:
    queried = {rule["alert"]: metric_names(str(rule["expr"])) for rule in RULES}
    assert any("up" in names for names in queried.values())  # gateway down
    assert any("cancelgw_circuit_state" in names for names in queried.values())
    assert any("cancelgw_jobs_total" in names for names in queried.values())  # error ratio
    assert any("histogram_quantile(0.99" in str(rule["expr"]) for rule in RULES)


def test_dashboard_shows_what_an_operator_needs_at_a_glance() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "cancellation-gateway"
    exprs = dashboard_expressions()
    queried = set().union(*map(metric_names, exprs))
    for needed in (
        "cancelgw_jobs_total",  # rate by outcome, error ratio by upstream
        "cancelgw_job_duration_seconds_bucket",  # latency quantiles
        "cancelgw_circuit_state",
        "cancelgw_upstream_in_flight",
        "cancelgw_retries_total",
    ):
        assert needed in queried
    assert any("sum by (outcome)" in e for e in exprs)
    for quantile in ("0.5", "0.95", "0.99"):
        assert any(f"histogram_quantile({quantile}," in e for e in exprs)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_picks_its_gateway_by_datasource_namespace_and_job() -> None:
    templating = json.loads(DASHBOARD.read_text())["templating"]["list"]
    variables = {v["name"]: v for v in templating}
    assert set(variables) == {"datasource", "namespace", "job"}
    for name in ("namespace", "job"):
        assert variables[name]["datasource"]["uid"] == "${datasource}"
        assert "cancelgw_build_info" in variables[name]["query"]["query"]
        # All = any value, a missing label included (Prometheus outside Kubernetes).
        assert (variables[name]["includeAll"], variables[name]["allValue"]) == (True, ".*")
    for expr in dashboard_expressions():
        selectors = re.findall(r"[A-Za-z_:][\w:]*\{([^}]*)\}", expr)
        assert len(selectors) == len(re.findall(r"\b(?:cancelgw|grpc|up)\w*\{", expr)) > 0
        for selector in selectors:
            assert selector.startswith('namespace=~"$namespace", job=~"$job"'), expr
    assert "cancellation-gateway" not in json.dumps(dashboard_expressions())
