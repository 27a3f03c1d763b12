"""The alerting rules, their promtool unit tests, the Prometheus configuration and the Grafana
dashboard: every rule tested, every metric they use exported by the app."""

import json
import shutil
import subprocess

import yaml

from agentidp.devenv import ROOT
from compliance.controls import REQUIRED_ALERTS, exported_metric_names, metrics_in

PROMETHEUS = ROOT / "monitoring" / "prometheus"
PROMTOOL = shutil.which("promtool")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL, "promtool is missing: make test installs the Debian package prometheus"
    return subprocess.run(  # noqa: S603 - promtool on our own files
        [PROMTOOL, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )


def _rules() -> list[dict[str, str]]:
    document = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_config_and_rules_are_valid() -> None:
    checked = _promtool("check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "alerts.yml" in (PROMETHEUS / "prometheus.yml").read_text()
    rules = _promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0 and "SUCCESS: 6 rules found" in rules.stdout


def test_every_rule_has_a_passing_promtool_test_file() -> None:
    names = [rule["alert"] for rule in _rules()]
    assert sorted(names) == sorted(REQUIRED_ALERTS)
    files = sorted((PROMETHEUS / "tests").glob("*.yml"))
    tested = {name for name in names for f in files if f"alertname: {name}" in f.read_text()}
    assert tested == set(names)
    for test_file in files:
        result = _promtool("test", "rules", str(test_file.relative_to(PROMETHEUS)))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout


def test_rules_and_dashboard_use_only_exported_metrics() -> None:
    exported = exported_metric_names()
    for rule in _rules():
        assert metrics_in(rule["expr"]) <= exported, rule["alert"]
    dashboard = json.loads((ROOT / "monitoring" / "grafana" / "agentidp.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = set().union(*(metrics_in(e) for e in expressions))
    assert used <= exported, used - exported
    assert {"agentidp_tokens_issued_total", "agentidp_auth_failures_total",
            "agentidp_webhook_deliveries_total", "agentidp_audit_chain_integrity"} <= used  # fmt: skip
