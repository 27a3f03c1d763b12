"""Operator commands print JSON and go through the same services as the API."""

import json
from io import StringIO

import pytest
from django.contrib.auth import authenticate
from django.core.management import CommandError, call_command

from agentidp.tenancy import platform_context, tenant_context
from agents.models import Agent
from compliance.models import AuditEvent
from organizations.models import Organization, StaffMembership


def _run(*args: str) -> dict[str, object]:
    out = StringIO()
    call_command(*args, stdout=out)
    document: dict[str, object] = json.loads(out.getvalue())
    return document


def test_createorganization_createagent_createstaff() -> None:
    org = _run("createorganization", "cmd-org", "--name", "Command Org", "--plan", "pro")
    assert org["slug"] == "cmd-org" and org["max_agents"] == 250
    with pytest.raises(CommandError, match="needs a sponsor"):  # nobody to answer for it yet
        _run("createagent", "--org", "cmd-org", "worker", "--capability", "search")
    staff = _run("createstaff", "--org", "cmd-org", "cmd-admin", "--role", "auditor")
    # no owner yet: the one person there is named
    agent = _run("createagent", "--org", "cmd-org", "worker", "--capability", "search",
                 "--sponsor", "cmd-admin")  # fmt: skip
    assert agent["sponsor"] == "cmd-admin"
    assert isinstance(staff["password"], str) and len(staff["password"]) >= 16
    assert authenticate(username="cmd-admin", password=staff["password"]) is not None
    with platform_context(reason="tests"):
        membership = StaffMembership.objects.get(user__username="cmd-admin")
        assert membership.role == "auditor"
        organization = Organization.objects.get(slug="cmd-org")
    with tenant_context(organization.id):
        assert Agent.objects.get(id=str(agent["id"])).capabilities == ["search"]
        actions = set(
            AuditEvent.objects.filter(organization_id=organization.id).values_list(
                "action", flat=True
            )
        )
    assert actions == {"organization.created", "agent.created", "did.created", "member.added"}


def test_createstaff_with_password_does_not_echo_it() -> None:
    _run("createorganization", "cmd-org-2")
    staff = _run("createstaff", "--org", "cmd-org-2", "quiet", "--password", "given-password-1")
    assert "password" not in staff


def test_errors_are_command_errors() -> None:
    with pytest.raises(CommandError, match="No organization"):
        _run("createagent", "--org", "missing", "x")
    _run("createorganization", "dup")
    with pytest.raises(CommandError, match="slug"):
        _run("createorganization", "dup")


def test_seeddemo_is_idempotent() -> None:
    args = ("seeddemo", "--staff-password", "pw-1-long-enough", "--platform-password", "pw-2-long")
    first, second = _run(*args), _run(*args)
    secret = first.pop("client_secret")
    assert isinstance(secret, str) and secret.startswith("ais_")
    assert first == second  # the second run finds everything and reveals no secret
    assert authenticate(username="demo-admin", password="pw-1-long-enough") is not None
