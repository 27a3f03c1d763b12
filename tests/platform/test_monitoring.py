"""The alerting rules, their promtool unit tests, the Prometheus configuration and the Grafana
dashboard: every rule tested, every metric they use exported by the app."""

import json
import re
import shutil
import subprocess

import prometheus_client
import yaml

from agentidp.devenv import ROOT
from compliance.controls import REQUIRED_ALERTS

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


def _exported() -> set[str]:
    names: set[str] = set()
    for family in prometheus_client.REGISTRY.collect():
        names |= {family.name, f"{family.name}_total", f"{family.name}_bucket"}
    return names


def _metrics_in(expression: str) -> set[str]:
    return set(re.findall(r"\bagentidp_[a-z_]+", expression))


def test_rules_and_dashboard_use_only_exported_metrics() -> None:
    exported = _exported()
    for rule in _rules():
        assert _metrics_in(rule["expr"]) <= exported, rule["alert"]
    dashboard = json.loads((ROOT / "monitoring" / "grafana" / "agentidp.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = set().union(*(_metrics_in(e) for e in expressions))
    assert used <= exported, used - exported
    assert {"agentidp_tokens_issued_total", "agentidp_auth_failures_total",
            "agentidp_webhook_deliveries_total", "agentidp_audit_chain_integrity"} <= used  # fmt: skip
