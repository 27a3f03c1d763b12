"""``docs/compliance/`` names only what exists: every command it tells an operator to run, every
endpoint it sends an auditor to and every metric it points at."""

import re
import uuid
from pathlib import Path

from django.core.management import get_commands
from django.urls import Resolver404, resolve

from compliance.controls import exported_metric_names, metrics_in

DOCS = Path(__file__).resolve().parents[2] / "docs" / "compliance"
TEXT = "\n".join(path.read_text() for path in sorted(DOCS.glob("*.md")))


def test_the_six_documents_are_there() -> None:
    assert {path.name for path in DOCS.glob("*.md")} == {
        "soc2-controls-matrix.md", "encryption-runbook.md", "audit-log-runbook.md",
        "incident-response.md", "secrets-rotation.md", "controls.md",
    }  # fmt: skip


def test_every_command_they_name_exists() -> None:
    named = set(re.findall(r'(?:manage\.py |ARGS=")([a-z_]+)', TEXT))
    assert {"rewrap", "verifyauditchain"} <= named
    assert named <= set(get_commands()), named - set(get_commands())


def test_every_endpoint_they_name_resolves() -> None:
    paths = re.findall(r"\b(?:GET|POST|PATCH|PUT|DELETE) (/[^\s`)]*)", TEXT)
    paths += re.findall(r"`(/[a-z.][^`\s]*)`", TEXT)
    assert "/compliance/controls" in paths
    unresolved = []
    for named in paths:
        path = re.sub(r"\{[^}]*\}", str(uuid.uuid4()), named.split("?")[0]).rstrip(".,")
        try:
            resolve(path)
        except Resolver404:
            unresolved.append(named)
    assert unresolved == []


def test_every_metric_they_name_is_exported() -> None:
    named = metrics_in(TEXT)
    assert "agentidp_audit_chain_integrity" in named
    assert named <= exported_metric_names(), named - exported_metric_names()
