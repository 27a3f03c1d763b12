"""The agents API as a user sees it: validation, lifecycle, filtering, quotas."""

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from agentidp.errors import QuotaExceeded
from agentidp.tenancy import platform_context, tenant_context
from agents.models import Agent
from agents.services import agent_register
from compliance.models import AuditEvent
from organizations.models import Organization
from tests.factories import TEST_ACTOR, AgentFactory, OrganizationFactory, sponsor_for


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def test_register_returns_the_agent_and_audits_it(api: APIClient, org: Organization) -> None:
    response = api.post(
        "/agents",
        {"name": "researcher", "capabilities": ["search", "search", "cite"], "metadata": {"a": 1}},
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "researcher"
    assert body["capabilities"] == ["search", "cite"]
    assert body["status"] == "active"
    assert body["organization_id"] == str(org.id)
    with tenant_context(org.id):
        event = AuditEvent.objects.get(organization_id=org.id, action="agent.created")
    assert event.subject_id == body["id"]
    assert event.actor_type == "user"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "x", "colour": "red"}, "colour"),
        ({"description": "no name"}, "name"),
        ({"name": "x", "capabilities": "search"}, "capabilities"),
        ({"name": "x", "capabilities": [{"nested": 1}]}, "capabilities[0]"),
        ({"name": "x", "metadata": ["not", "an", "object"]}, "metadata"),
        ({"name": "x" * 201}, "name"),
        ({"name": "x", "metadata": {"blob": "y" * 9000}}, "metadata"),
    ],
)
def test_bad_input_is_400_naming_the_field(
    api: APIClient, org: Organization, payload: dict[str, Any], field: str
) -> None:
    body = _problem(api.post("/agents", payload, format="json"), 400)
    assert field in body["errors"], body
    with tenant_context(org.id):
        assert not Agent.objects.filter(organization_id=org.id).exists()


def test_malformed_json_is_400(api: APIClient) -> None:
    response = api.generic("POST", "/agents", "{not json", content_type="application/json")
    assert _problem(response, 400)["title"] == "Malformed request"


def test_non_object_body_is_400(api: APIClient) -> None:
    body = _problem(api.post("/agents", ["a"], format="json"), 400)
    assert "body" in body["errors"]


def test_invalid_uuid_in_path_is_400(api: APIClient) -> None:
    assert "id" in _problem(api.get("/agents/not-a-uuid"), 400)["errors"]


def test_unknown_agent_is_404(api: APIClient) -> None:
    _problem(api.get("/agents/00000000-0000-0000-0000-0000000000ff"), 404)


def test_duplicate_name_is_409(api: APIClient, agent: Agent) -> None:
    body = _problem(api.post("/agents", {"name": agent.name}, format="json"), 409)
    assert "name" in body["errors"]


def test_same_name_in_another_organization_is_fine(api: APIClient, foreign_agent: Agent) -> None:
    assert api.post("/agents", {"name": foreign_agent.name}, format="json").status_code == 201


def test_update_changes_only_given_fields(api: APIClient, agent: Agent) -> None:
    response = api.patch(f"/agents/{agent.id}", {"description": "new"}, format="json")
    assert response.status_code == 200
    assert response.json()["description"] == "new"
    assert response.json()["name"] == agent.name


def test_update_rename_to_taken_name_is_409_and_unchanged(
    api: APIClient, org: Organization, agent: Agent
) -> None:
    other = AgentFactory(organization=org, name="other")
    _problem(api.patch(f"/agents/{other.id}", {"name": agent.name}, format="json"), 409)
    assert api.get(f"/agents/{other.id}").json()["name"] == "other"


def test_lifecycle(api: APIClient, agent: Agent, org: Organization) -> None:
    url = f"/agents/{agent.id}"
    assert (
        api.post(f"{url}/suspend", {"reason": "r"}, format="json").json()["status"] == "suspended"
    )
    _problem(api.post(f"{url}/suspend"), 409)
    assert api.post(f"{url}/reactivate").json()["status"] == "active"
    assert api.post(f"{url}/decommission").json()["status"] == "decommissioned"
    body = _problem(api.post(f"{url}/reactivate"), 409)
    assert "decommissioned" in body["detail"]
    _problem(api.patch(url, {"description": "zombie"}, format="json"), 409)
    with tenant_context(org.id):
        actions = list(
            AuditEvent.objects.filter(organization_id=org.id, subject_id=str(agent.id))
            .order_by("sequence")
            .values_list("action", flat=True)
        )
    assert [a for a in actions if a.startswith("agent.")] == [
        "agent.created",
        "agent.suspended",
        "agent.reactivated",
        "agent.decommissioned",
    ]
    assert actions.index("did.created") < actions.index("agent.suspended")
    assert actions.index("did.deactivated") > actions.index("agent.reactivated")


def test_list_filters_orders_and_paginates(api: APIClient, org: Organization) -> None:
    for name in ["charlie", "alpha", "bravo"]:
        AgentFactory(organization=org, name=name)
    bravo = api.get("/agents?name=rav").json()["results"]
    assert [a["name"] for a in bravo] == ["bravo"]
    api.post(f"/agents/{bravo[0]['id']}/suspend")
    assert [a["name"] for a in api.get("/agents?status=suspended").json()["results"]] == ["bravo"]
    names = [a["name"] for a in api.get("/agents?ordering=-name").json()["results"]]
    assert names == ["charlie", "bravo", "alpha"]
    page = api.get("/agents?page_size=2&ordering=name").json()
    assert page["count"] == 3 and len(page["results"]) == 2 and page["next"]
    assert "status" in _problem(api.get("/agents?status=sleeping"), 400)["errors"]
    assert "ordering" in _problem(api.get("/agents?ordering=secret"), 400)["errors"]


def test_quota_counts_live_agents_only(api: APIClient) -> None:
    with platform_context(reason="tests"):
        small = OrganizationFactory(max_agents=2)
    first = AgentFactory(organization=small)
    AgentFactory(organization=small)
    with tenant_context(small.id), pytest.raises(QuotaExceeded):
        agent_register(
            actor=TEST_ACTOR, organization_id=small.id, name="third", sponsor=sponsor_for(small)
        )
    with tenant_context(small.id):
        from agents.services import agent_decommission

        agent_decommission(actor=TEST_ACTOR, organization_id=small.id, agent_id=first.id)
        assert agent_register(
            actor=TEST_ACTOR, organization_id=small.id, name="third", sponsor=sponsor_for(small)
        ).name


def test_quota_exceeded_over_http_is_409(client_for: Callable[..., APIClient]) -> None:
    from organizations.choices import MemberRole
    from tests.factories import StaffFactory

    small = OrganizationFactory(max_agents=1)
    client = client_for(StaffFactory(organization=small, role=MemberRole.ADMIN))
    assert client.post("/agents", {"name": "one"}, format="json").status_code == 201
    body = _problem(client.post("/agents", {"name": "two"}, format="json"), 409)
    assert body["type"] == "urn:agentidp:problem:quota_exceeded"


def test_concurrent_registrations_at_the_limit_never_both_succeed(
    run_in_threads: Callable[..., list[Any]],
) -> None:
    (organization,) = run_in_threads(lambda: OrganizationFactory(max_agents=3))
    (sponsor,) = run_in_threads(lambda: sponsor_for(organization))
    rounds = []
    for attempt in range(3):

        def register(name: str) -> Callable[[], Agent]:
            def run() -> Agent:
                with tenant_context(organization.id):
                    return agent_register(
                        actor=TEST_ACTOR, organization_id=organization.id, name=name,
                        sponsor=sponsor,
                    )  # fmt: skip

            return run

        rounds.append(run_in_threads(register(f"a{attempt}"), register(f"b{attempt}")))
    successes = [r for pair in rounds for r in pair if isinstance(r, Agent)]
    refusals = [r for pair in rounds for r in pair if isinstance(r, QuotaExceeded)]
    assert len(successes) == 3 and len(refusals) == 3
    with tenant_context(organization.id):
        assert Agent.objects.filter(organization_id=organization.id).count() == 3


def test_suspended_organization_cannot_register(api: APIClient, org: Organization) -> None:
    from organizations.services import organization_suspend

    with platform_context(reason="tests"):
        organization_suspend(actor=TEST_ACTOR, organization_id=org.id)
    # its staff are suspended principals now: the policy refuses every action
    _problem(api.post("/agents", {"name": "late"}, format="json"), 403)
