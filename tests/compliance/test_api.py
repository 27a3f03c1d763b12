"""GET /audit: the caller's organization only, filters, cursor pagination."""

from typing import Any

from rest_framework.test import APIClient

from agents.models import Agent
from organizations.models import Organization
from tests.factories import AgentFactory


def test_audit_lists_own_events_newest_first(
    api: APIClient, org: Organization, agent: Agent, foreign_agent: Agent
) -> None:
    events = api.get("/audit").json()["results"]
    subjects = {e["subject_id"] for e in events}
    assert str(agent.id) in subjects and str(foreign_agent.id) not in subjects
    assert {e["organization_id"] for e in events} == {str(org.id)}
    sequences = [e["sequence"] for e in events]
    assert sequences == sorted(sequences, reverse=True)
    assert all(len(e["hash"]) == 64 for e in events)


def test_filters(api: APIClient, org: Organization, agent: Agent) -> None:
    api.post(f"/agents/{agent.id}/suspend")

    def actions(query: str) -> list[str]:
        return [e["action"] for e in api.get(f"/audit?{query}").json()["results"]]

    assert actions("action=agent.suspended") == ["agent.suspended"]
    assert actions("action=agent.*") == ["agent.suspended", "agent.created"]
    assert actions(f"subject_id={agent.id}&subject_type=agent") == [
        "agent.suspended",
        "did.created",
        "agent.created",
    ]
    assert actions("actor_type=user") == [
        "agent.suspended",
        "member.added",
    ] or "agent.suspended" in (actions("actor_type=user"))
    assert actions("since=2999-01-01T00:00:00Z") == []
    assert "agent.created" in actions("until=2999-01-01T00:00:00Z")


def test_cursor_pagination(api: APIClient, org: Organization) -> None:
    for n in range(5):
        AgentFactory(organization=org, name=f"paged-{n}")
    seen: list[int] = []
    url: str | None = "/audit?page_size=2"
    while url:
        page: dict[str, Any] = api.get(url).json()
        seen += [e["sequence"] for e in page["results"]]
        url = page["next"]
    assert seen == sorted(set(seen), reverse=True)
    assert len(seen) >= 6


def test_bad_filters_are_400(api: APIClient) -> None:
    response = api.get("/audit?since=yesterday")
    assert response.status_code == 400 and "since" in response.json()["errors"]
    assert api.get("/audit?actor_type=alien").status_code == 400
