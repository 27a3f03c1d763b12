"""The agent page in the admin shows the DID and its keys; the rotate action goes through the
DID service."""

from typing import Any

from django.contrib.auth.models import User

from agentidp.tenancy import tenant_context
from did.models import AgentDidKey
from organizations.models import Organization
from tests.factories import AgentFactory
from tests.platform.test_admin import _login


def test_the_agent_page_shows_the_did_and_rotates_its_key(
    staff: User, org: Organization, other_org: Organization,
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    agent = AgentFactory(organization=org)
    foreign = AgentFactory(organization=other_org)
    with tenant_context(org.id):
        (key,) = AgentDidKey.objects.filter(agent=agent)
    client = _login(staff)
    page = client.get(f"/admin/agents/agent/{agent.id}/change/").content.decode()
    assert agent.did in page and key.kid in page and "ours (secret store)" in page
    with django_capture_on_commit_callbacks(execute=True):
        done = client.post(
            "/admin/agents/agent/",
            {"action": "rotate_did_key", "_selected_action": [str(agent.id), str(foreign.id)]},
            follow=True,
        ).content.decode()
    assert "Rotated the DID key of 1 object(s)." in done  # the foreign agent is not even listed
    with tenant_context(org.id):
        statuses = sorted(AgentDidKey.objects.filter(agent=agent).values_list("status", flat=True))
    assert statuses == ["active", "retired"]
    with tenant_context(other_org.id):
        assert AgentDidKey.objects.filter(agent=foreign).count() == 1


def test_skills_are_edited_in_the_admin_through_the_service(staff: User, org: Organization) -> None:
    agent = AgentFactory(organization=org)
    client = _login(staff)
    form = {
        "name": agent.name,
        "description": "edited",
        "capabilities": "search",
        "metadata": "{}",
        "version": "2.0.0",
        "skills": "Search: finds documents [web, read]\r\n\r\nSummarize\r\n",
        "authors": "Ops",
    }
    response = client.post(f"/admin/agents/agent/{agent.id}/change/", form)
    assert response.status_code == 302, response.content.decode()[:3000]
    card = client.get(f"/agents/{agent.id}/did/card").json()
    assert card["version"] == "2.0.0"
    assert card["skills"] == [
        {
            "id": "search",
            "name": "Search",
            "description": "finds documents",
            "tags": ["web", "read"],
        },
        {"id": "summarize", "name": "Summarize", "description": "", "tags": []},
    ]
    page = client.get(f"/admin/agents/agent/{agent.id}/change/").content.decode()
    assert "Search: finds documents [web, read]" in page  # shown as it was typed
    for bad_skills, error in ((": no name", "a skill needs a name"), ("x" * 201, "name: text of")):
        bad = client.post(f"/admin/agents/agent/{agent.id}/change/", {**form, "skills": bad_skills})
        assert bad.status_code == 200 and error in bad.content.decode(), bad_skills
    with tenant_context(org.id):
        agent.refresh_from_db()
    assert [s["id"] for s in agent.skills] == ["search", "summarize"]
