"""The platform organizations API and organization membership."""

from typing import Any

from django.contrib.auth.models import User
from rest_framework.test import APIClient

from agentidp.tenancy import platform_context, tenant_context
from agents.models import Agent, OrganizationMember
from compliance.models import AuditEvent
from organizations.models import Organization
from tests.factories import AgentFactory, OrganizationFactory, StaffFactory


def _events(organization_id: Any) -> list[str]:
    with tenant_context(organization_id):
        return list(
            AuditEvent.objects.filter(organization_id=organization_id)
            .order_by("sequence")
            .values_list("action", flat=True)
        )


def test_create_uses_plan_quotas_and_audits(platform_api: APIClient) -> None:
    response = platform_api.post(
        "/organizations", {"slug": "acme", "name": "Acme", "plan": "enterprise"}, format="json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["max_agents"] == 10_000 and body["status"] == "active"
    assert _events(body["id"]) == ["organization.created"]
    duplicate = platform_api.post("/organizations", {"slug": "acme"}, format="json")
    assert duplicate.status_code == 409 and "slug" in duplicate.json()["errors"]


def test_create_rejects_bad_input(platform_api: APIClient) -> None:
    for payload, field in [
        ({"slug": "Not A Slug!"}, "slug"),
        ({"slug": "ok", "plan": "platinum"}, "plan"),
        ({"slug": "ok", "max_agents": -1}, "max_agents"),
        ({"slug": "ok", "max_agents": "many"}, "max_agents"),
        ({"slug": "ok", "owner": "me"}, "owner"),
    ]:
        response = platform_api.post("/organizations", payload, format="json")
        assert response.status_code == 400, payload
        assert field in response.json()["errors"], payload


def test_list_and_retrieve_cross_organizations(platform_api: APIClient, org: Organization) -> None:
    other = OrganizationFactory()
    slugs = {o["slug"] for o in platform_api.get("/organizations?page_size=200").json()["results"]}
    assert {org.slug, other.slug} <= slugs
    assert platform_api.get(f"/organizations/{other.id}").json()["slug"] == other.slug


def test_patch_quotas_plan_and_status(platform_api: APIClient, org: Organization) -> None:
    url = f"/organizations/{org.id}"
    body = platform_api.patch(url, {"max_agents": 7, "name": "Renamed"}, format="json").json()
    assert (body["max_agents"], body["name"]) == (7, "Renamed")
    body = platform_api.patch(url, {"plan": "free"}, format="json").json()
    assert (body["plan"], body["max_agents"]) == ("free", 10)
    assert platform_api.patch(url, {"status": "suspended"}, format="json").json()["status"] == (
        "suspended"
    )
    assert platform_api.patch(url, {"status": "active"}, format="json").json()["status"] == "active"
    bad = platform_api.patch(url, {"status": "deleted"}, format="json")
    assert bad.status_code == 400 and "status" in bad.json()["errors"]
    assert _events(org.id) == [
        "organization.created",
        "organization.updated",
        "organization.updated",
        "organization.suspended",
        "organization.reactivated",
    ]


def test_delete_with_agents_is_refused_until_suspended(
    platform_api: APIClient, org: Organization, agent: Agent
) -> None:
    url = f"/organizations/{org.id}"
    refused = platform_api.delete(url)
    assert refused.status_code == 409
    assert "suspend" in refused.json()["detail"]
    with tenant_context(org.id):
        assert Agent.objects.filter(organization_id=org.id).exists()
    platform_api.patch(url, {"status": "suspended"}, format="json")
    assert platform_api.delete(url).status_code == 204
    assert platform_api.get(url).status_code == 404
    with tenant_context(org.id):
        assert not Agent.objects.filter(organization_id=org.id).exists()
    # the audit chain outlives the tenant
    assert _events(org.id)[-1] == "organization.deleted"


def test_system_organization_cannot_be_deleted_or_suspended(
    platform_api: APIClient, system_org: Organization
) -> None:
    assert platform_api.delete(f"/organizations/{system_org.id}").status_code == 409
    response = platform_api.patch(
        f"/organizations/{system_org.id}", {"status": "suspended"}, format="json"
    )
    assert response.status_code == 409


def test_members_add_and_change_role(api: APIClient, org: Organization, agent: Agent) -> None:
    url = f"/organizations/{org.id}/members"
    created = api.post(url, {"agent_id": str(agent.id), "role": "member"}, format="json")
    assert created.status_code == 201 and created.json()["role"] == "member"
    api.post(url, {"agent_id": str(agent.id), "role": "auditor"}, format="json")
    members = api.get(url).json()["results"]
    assert [(m["agent_id"], m["role"]) for m in members] == [(str(agent.id), "auditor")]
    assert _events(org.id)[-2:] == ["member.added", "member.updated"]


def test_member_bad_input(api: APIClient, org: Organization, foreign_agent: Agent) -> None:
    url = f"/organizations/{org.id}/members"
    assert api.post(url, {"agent_id": "nope", "role": "admin"}, format="json").status_code == 400
    assert api.post(url, {"agent_id": str(foreign_agent.id), "role": "x"}, format="json").json()[
        "errors"
    ].keys() == {"role"}
    # another organization's agent is as missing as an unknown one
    response = api.post(url, {"agent_id": str(foreign_agent.id), "role": "admin"}, format="json")
    assert response.status_code == 404
    with platform_context(reason="tests"):
        assert not OrganizationMember.objects.filter(agent_id=foreign_agent.id).exists()


def test_platform_staff_manage_members_of_any_organization(
    platform_api: APIClient, foreign_agent: Agent
) -> None:
    url = f"/organizations/{foreign_agent.organization_id}/members"
    response = platform_api.post(
        url, {"agent_id": str(foreign_agent.id), "role": "owner"}, format="json"
    )
    assert response.status_code == 201


def test_staff_principal_of_suspended_org_is_refused(
    client_for: Any, org: Organization, staff: User
) -> None:
    from organizations.services import organization_suspend
    from tests.factories import TEST_ACTOR

    with platform_context(reason="tests"):
        organization_suspend(actor=TEST_ACTOR, organization_id=org.id)
    assert client_for(staff).get("/agents").status_code == 403


def test_new_organization_can_be_used_at_once(platform_api: APIClient) -> None:
    created = platform_api.post("/organizations", {"slug": "fresh"}, format="json").json()
    StaffFactory(organization=Organization(id=created["id"]), role="owner")  # its sponsor
    agent = AgentFactory(organization=Organization(id=created["id"]), name="first")
    assert agent.organization_id is not None
