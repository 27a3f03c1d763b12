"""The admin through a real login: staff see their organization only, by RLS."""

import html
import re

from django.contrib.auth.models import User
from django.test import Client

from agentidp.tenancy import platform_context, tenant_context
from agents.models import Agent
from compliance.models import AuditEvent
from organizations.choices import MemberRole
from organizations.models import Organization
from tests.factories import AgentFactory, OrganizationFactory, StaffFactory

PASSWORD = "correct-horse-battery"


def shown_once(page: str) -> dict[str, str]:
    """The label and value of each row of a shown-once page (a secret or a one-time link)."""
    rows = re.findall(
        r'<th scope="row">([^<]+)</th>\s*<td><code id="once-\d+">([^<]+)</code>', page
    )
    return {label: html.unescape(value) for label, value in rows}


def _login(user: User) -> Client:
    client = Client()
    response = client.post(
        "/admin/login/?next=/admin/", {"username": user.username, "password": PASSWORD}
    )
    assert response.status_code == 302, response.content[:500]
    return client


def test_staff_sees_only_their_organizations_agents(
    staff: User, agent: Agent, foreign_agent: Agent
) -> None:
    client = _login(staff)
    page = client.get("/admin/agents/agent/").content.decode()
    assert agent.name in page
    assert foreign_agent.name not in page
    assert client.get(f"/admin/agents/agent/{foreign_agent.id}/change/").status_code in {302, 404}
    assert client.get(f"/admin/agents/agent/{agent.id}/change/").status_code == 200


def test_staff_sees_only_their_audit_events_and_organization(
    staff: User, org: Organization, other_org: Organization, foreign_agent: Agent
) -> None:
    client = _login(staff)
    audit = client.get("/admin/compliance/auditevent/").content.decode()
    assert "organization.created" in audit
    assert str(foreign_agent.id) not in audit
    organizations = client.get("/admin/organizations/organization/").content.decode()
    assert org.slug in organizations
    assert other_org.slug not in organizations


def test_superuser_sees_all_organizations_and_agents(
    superuser: User, org: Organization, other_org: Organization, agent: Agent, foreign_agent: Agent
) -> None:
    client = _login(superuser)
    page = client.get("/admin/agents/agent/").content.decode()
    assert agent.name in page and foreign_agent.name in page
    organizations = client.get("/admin/organizations/organization/").content.decode()
    assert org.slug in organizations and other_org.slug in organizations


def test_superuser_creates_organization_and_edits_quota(superuser: User) -> None:
    client = _login(superuser)
    response = client.post(
        "/admin/organizations/organization/add/",
        {
            "slug": "from-admin",
            "name": "From admin",
            "plan": "pro",
            "max_agents": "",
            "max_tokens_per_month": "",
            "staff_memberships-TOTAL_FORMS": "0",
            "staff_memberships-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    from agentidp.tenancy import platform_context

    with platform_context(reason="tests"):
        created = Organization.objects.get(slug="from-admin")
    assert created.max_agents == 250
    with tenant_context(created.id):
        assert AuditEvent.objects.filter(
            organization_id=created.id, action="organization.created", actor_type="user"
        ).exists()
    response = client.post(
        f"/admin/organizations/organization/{created.id}/change/",
        {
            "name": "From admin",
            "plan": "pro",
            "max_agents": "250",
            "max_tokens_per_month": "",
            "access_token_lifetime_seconds": "900",
            "credential_grace_seconds": "3600",
            "did_key_algorithm": "Ed25519",
            "delegation_max_depth": "3",
            "attestation_period_days": "90",
            "staff_memberships-TOTAL_FORMS": "0",
            "staff_memberships-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    with tenant_context(created.id):
        changed = Organization.objects.get(id=created.id)
        update = AuditEvent.objects.get(organization_id=created.id, action="organization.updated")
    assert (changed.access_token_lifetime_seconds, changed.credential_grace_seconds) == (900, 3600)
    assert set(update.data["changed"]) == {
        "access_token_lifetime_seconds",
        "credential_grace_seconds",
    }


def test_admin_lifecycle_action_goes_through_the_service(staff: User, org: Organization) -> None:
    target = AgentFactory(organization=org, name="to-suspend")
    client = _login(staff)
    action = {"action": "suspend", "_selected_action": [str(target.id)]}
    asked = client.post("/admin/agents/agent/", action).content.decode()
    assert "Suspend selected agents?" in asked and "to-suspend" in asked
    with tenant_context(org.id):
        assert Agent.objects.get(id=target.id).status == "active"  # nothing before the answer
    response = client.post("/admin/agents/agent/", {**action, "confirmed": "yes"}, follow=True)
    assert response.status_code == 200
    assert "Suspended 1" in response.content.decode()
    with tenant_context(org.id):
        assert Agent.objects.get(id=target.id).status == "suspended"
        assert AuditEvent.objects.filter(
            subject_id=str(target.id), action="agent.suspended"
        ).exists()


def test_staff_registers_agent_in_admin(staff: User, org: Organization) -> None:
    client = _login(staff)
    response = client.post(
        "/admin/agents/agent/add/",
        {
            "name": "admin-made",
            "description": "",
            "capabilities": "search\r\n\r\n  plan \r\n",
            "metadata": "{}",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    with tenant_context(org.id):
        made = Agent.objects.get(organization_id=org.id, name="admin-made")
    assert made.capabilities == ["search", "plan"]


def test_admin_action_refusal_is_reported(staff: User, org: Organization) -> None:
    target = AgentFactory(organization=org, name="already")
    client = _login(staff)
    client.post(
        "/admin/agents/agent/",
        {"action": "decommission", "_selected_action": [str(target.id)], "confirmed": "yes"},
    )
    response = client.post(
        "/admin/agents/agent/",
        {"action": "reactivate", "_selected_action": [str(target.id)]},
        follow=True,
    )
    assert "cannot be reactivated" in response.content.decode()


def test_other_tenant_is_invisible_even_to_raw_admin_queryset(
    staff: User, other_org: Organization
) -> None:
    hidden = AgentFactory(organization=OrganizationFactory(), name="elsewhere")
    client = _login(staff)
    page = client.get("/admin/agents/agent/?q=elsewhere").content.decode()
    assert str(hidden.id) not in page
    assert "0 agents" in page


def test_an_auditor_reads_everything_and_changes_nothing(org: Organization, agent: Agent) -> None:
    client = _login(StaffFactory(organization=org, role=MemberRole.AUDITOR))
    index = client.get("/admin/").content.decode()
    for shown in (
        "compliance/auditevent", "agents/agent", "credentials/clientsecret",
        "organizations/organization", "organizations/staffmembership",
        "webhooks/webhooksubscription", "webhooks/webhookdelivery", "federation/federationpartner",
        "oidc/resource", "oidc/resourcegrant",
    ):  # fmt: skip
        assert f"/admin/{shown}/" in index, shown
        listing = client.get(f"/admin/{shown}/")
        assert listing.status_code == 200, shown
        assert 'name="action"' not in listing.content.decode(), shown  # no action offered
    assert "/add/" not in index  # nothing to add
    page = client.get(f"/admin/agents/agent/{agent.id}/change/").content.decode()
    assert agent.name in page and 'name="_save"' not in page
    assert "/suspend/" not in page and "/secret/" not in page  # no lifecycle or secret buttons
    for path in (
        "/admin/agents/agent/add/",
        "/admin/organizations/staffmembership/add/",
        "/admin/webhooks/webhooksubscription/add/",
    ):
        assert client.get(path).status_code in {403, 404}, path
    for path in (
        f"/admin/agents/agent/{agent.id}/suspend/",
        f"/admin/agents/agent/{agent.id}/secret/",
    ):
        assert client.post(path, {"confirmed": "yes"}).status_code == 404, path
    assert (
        client.post(
            f"/admin/agents/agent/{agent.id}/change/", {"name": "renamed", "metadata": "{}"}
        ).status_code
        == 403
    )
    assert client.get("/admin/compliance/auditevent/report/").status_code == 200
    with tenant_context(org.id):
        unchanged = Agent.objects.get(id=agent.id)
        assert (unchanged.name, unchanged.status) == (agent.name, "active")


def test_a_member_reads_agents_but_changes_nothing(org: Organization, agent: Agent) -> None:
    client = _login(StaffFactory(organization=org, role=MemberRole.MEMBER))
    listing = client.get("/admin/agents/agent/").content.decode()
    assert agent.name in listing and 'name="action"' not in listing  # no actions offered
    assert client.get("/admin/agents/agent/add/").status_code == 403
    change = f"/admin/agents/agent/{agent.id}/change/"
    assert 'name="_save"' not in client.get(change).content.decode()  # read only
    assert client.post(change, {"name": "renamed", "metadata": "{}"}).status_code == 403
    suspended = client.post(
        "/admin/agents/agent/", {"action": "suspend", "_selected_action": [str(agent.id)]}
    )
    assert suspended.status_code in {200, 302}
    page = f"/admin/organizations/organization/{org.id}/change/"
    assert client.post(page, {"name": "taken over"}).status_code == 403
    assert client.get("/admin/compliance/auditevent/").status_code == 403  # no audit:read
    for path in ("/admin/webhooks/webhooksubscription/", "/admin/federation/federationpartner/"):
        assert client.get(path).status_code == 403, path  # members see agents and people only
    with tenant_context(org.id):
        unchanged = Agent.objects.get(id=agent.id)
        assert (unchanged.name, unchanged.status) == (agent.name, "active")
    with platform_context(reason="tests"):
        assert Organization.objects.get(id=org.id).name == org.name
