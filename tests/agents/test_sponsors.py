"""An accountable person for every agent: the sponsor is whoever created it (or the creating
agent's sponsor, or the organization's longest-standing owner), can be reassigned, and leaving
the organization suspends the agents they answer for at once; sponsors attest each period or
their agents are suspended; the kill switch stops one sponsor's agents or all of them. Through
HTTP and the real database."""

import io
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client as HttpClient
from django.utils import timezone
from rest_framework.test import APIClient

from agentidp.tenancy import platform_context, tenant_context
from agents.models import Agent
from agents.tasks import attestations_enforce_task
from compliance.models import AuditEvent
from organizations.choices import MemberRole
from organizations.models import Organization
from tests.factories import StaffFactory
from tests.oidc.conftest import FORM, basic, credentialed
from tests.oidc.conftest import agent_token as token_for


def events(org: Organization, action: str, subject: uuid.UUID | None = None) -> list[AuditEvent]:
    with tenant_context(org.id):
        found = AuditEvent.objects.filter(organization_id=org.id, action=action)
        if subject is not None:
            found = found.filter(subject_id=str(subject))
        return list(found.order_by("sequence"))


def agent_row(org: Organization, agent_id: uuid.UUID | str) -> Agent:
    with tenant_context(org.id):
        return Agent.objects.select_related("sponsor").get(id=agent_id)


def active(token: str, client: Any) -> bool:
    response = HttpClient().post(
        "/oauth2/introspect", f"token={token}", FORM,
        HTTP_AUTHORIZATION=basic(client.client_id, client.secret),
    )  # fmt: skip
    return bool(response.json()["active"])


def test_the_person_who_creates_an_agent_sponsors_it_unless_another_is_named(
    api: APIClient, staff: User, org: Organization, other_org: Organization
) -> None:
    created = api.post("/agents", {"name": "mine"}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["sponsor"] == staff.username and body["attested_at"]
    assert api.get(f"/agents/{body['id']}").json()["sponsor"] == staff.username
    colleague = StaffFactory(organization=org, role=MemberRole.MEMBER)
    named = api.post("/agents", {"name": "theirs", "sponsor": colleague.username}, format="json")
    assert named.status_code == 201 and named.json()["sponsor"] == colleague.username
    listed = {a["name"]: a["sponsor"] for a in api.get("/agents").json()["results"]}
    assert listed["mine"] == staff.username and listed["theirs"] == colleague.username
    # another organization's person or a stranger: 404, a name that names nobody here;
    # hostile text: 400; nothing created either way
    outsider = StaffFactory(organization=other_org)
    for sponsor, status in ((outsider.username, 404), ("nobody-here", 404), ("x\u0000y", 400),
                            ("a" * 500, 400), (7, 400), (["a"], 400)):  # fmt: skip
        refused = api.post("/agents", {"name": f"n-{uuid.uuid4().hex[:6]}", "sponsor": sponsor},
                           format="json")  # fmt: skip
        assert refused.status_code == status, (sponsor, refused.content)
        assert refused["Content-Type"] == "application/problem+json"
        problem = refused.json()
        # a NUL is refused by the input boundary before any field is read
        assert "sponsor" in problem.get("errors", {}) or "NUL" in problem["detail"], problem
    with tenant_context(org.id):
        assert Agent.objects.filter(organization_id=org.id).count() == 2


def test_an_agent_created_by_an_agent_gets_the_creators_sponsor(org: Organization) -> None:
    creator = credentialed(org, ["agents:read", "agents:write"])
    sponsor = agent_row(org, creator.agent.id).sponsor
    assert sponsor is not None and sponsor.username == f"sponsor-{org.slug}"  # tests.factories
    response = APIClient().post(
        "/agents", {"name": "child"}, format="json",
        HTTP_AUTHORIZATION=f"Bearer {token_for(creator)}",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    assert response.json()["sponsor"] == sponsor.username
    created = events(org, "agent.created", uuid.UUID(response.json()["id"]))[0]
    assert created.data["sponsor"] == sponsor.username


def test_put_sponsor_reassigns_and_refuses_what_is_not_a_person_here(
    api: APIClient, org: Organization, other_org: Organization, agent: Agent
) -> None:
    colleague = StaffFactory(organization=org, role=MemberRole.ADMIN)
    first = agent_row(org, agent.id).sponsor_username
    response = api.put(f"/agents/{agent.id}/sponsor", {"username": colleague.username},
                       format="json")  # fmt: skip
    assert response.status_code == 200, response.content
    assert response.json()["sponsor"] == colleague.username
    changed = events(org, "agent.sponsor_changed", agent.id)
    assert changed and first and changed[-1].data["from"] == first
    assert changed[-1].data["to"] == colleague.username
    outsider = StaffFactory(organization=other_org)
    nobody = api.put(f"/agents/{agent.id}/sponsor", {"username": outsider.username},
                     format="json")  # fmt: skip
    assert nobody.status_code == 404 and "sponsor" in nobody.json()["errors"]
    for body in ({"username": ""}, {}, {"username": None}, {"username": "x", "extra": 1}):
        bad = api.put(f"/agents/{agent.id}/sponsor", body, format="json")
        assert bad.status_code == 400, (body, bad.content)
    foreign = StaffFactory(organization=other_org)  # another organization's agent: 404
    with tenant_context(other_org.id):
        theirs = Agent.objects.filter(organization_id=other_org.id).first()
    theirs_id = theirs.id if theirs else uuid.uuid4()
    missing = api.put(f"/agents/{theirs_id}/sponsor", {"username": foreign.username},
                      format="json")  # fmt: skip
    assert missing.status_code == 404
    assert agent_row(org, agent.id).sponsor_id == colleague.id


def remove_person(org: Organization, person: User) -> None:
    """Staff remove a person in the admin, as an owner would."""
    owner = StaffFactory(organization=org, role=MemberRole.OWNER)
    admin = HttpClient()
    admin.force_login(owner)
    with platform_context(reason="tests"):
        membership_id = person.staff_membership.id
    response = admin.post(
        f"/admin/organizations/staffmembership/{membership_id}/remove/", {"confirmed": "yes"}
    )
    assert response.status_code == 302, response.content


def test_a_sponsor_leaving_suspends_their_agents_unless_reassigned_first(
    org: Organization,
) -> None:
    leaving = StaffFactory(organization=org, role=MemberRole.ADMIN)
    staying = StaffFactory(organization=org, role=MemberRole.ADMIN)
    theirs = credentialed(org, ["agents:read", "agents:write"])
    moved = credentialed(org, ["agents:read"])
    api = APIClient()
    api.force_login(staying)
    for agent in (theirs, moved):
        assert api.put(f"/agents/{agent.agent.id}/sponsor", {"username": leaving.username},
                       format="json").status_code == 200  # fmt: skip
    token = token_for(theirs)
    # reassigned before the removal: keeps running
    assert api.put(f"/agents/{moved.agent.id}/sponsor", {"username": staying.username},
                   format="json").status_code == 200  # fmt: skip
    remove_person(org, leaving)
    assert agent_row(org, theirs.agent.id).status == "suspended"
    assert agent_row(org, moved.agent.id).status == "active"
    assert not active(token, moved)  # its tokens went with it
    suspended = events(org, "agent.suspended", theirs.agent.id)[-1]
    assert suspended.actor_type == "system" and suspended.actor_id == "sponsorship"
    assert suspended.data["reason"] == f"sponsor_removed: {leaving.username}"
    # it cannot come back until someone answers for it
    again = api.post(f"/agents/{theirs.agent.id}/reactivate", {}, format="json")
    assert again.status_code == 409 and "sponsor" in again.json()["errors"]
    api.put(f"/agents/{theirs.agent.id}/sponsor", {"username": staying.username}, format="json")
    assert api.post(f"/agents/{theirs.agent.id}/reactivate", {}, format="json").status_code == 200


def test_a_login_deactivated_anywhere_suspends_the_agents_it_sponsors(org: Organization) -> None:
    person = StaffFactory(organization=org, role=MemberRole.ADMIN)
    api = APIClient()
    api.force_login(person)
    created = api.post("/agents", {"name": "sponsored"}, format="json").json()
    with platform_context(reason="tests"):  # platform staff, in Django's own user page
        person.is_active = False
        person.save()
    assert agent_row(org, created["id"]).status == "suspended"
    reason = events(org, "agent.suspended", uuid.UUID(created["id"]))[-1].data["reason"]
    assert reason == f"sponsor_deactivated: {person.username}"


def test_sponsors_are_warned_then_lapsed_agents_are_suspended_and_attesting_renews(
    staff: User, org: Organization, platform_api: APIClient
) -> None:
    agent = credentialed(org, ["agents:read"])
    start = timezone.now()
    with time_machine.travel(start + timedelta(days=80), tick=False):
        assert attestations_enforce_task(str(org.id)) == {"warned": 0, "suspended": 0}
    with time_machine.travel(start + timedelta(days=84), tick=False):
        assert attestations_enforce_task(str(org.id)) == {"warned": 1, "suspended": 0}
        assert attestations_enforce_task(str(org.id)) == {"warned": 0, "suspended": 0}  # once
    due = events(org, "agent.attestation_due", agent.agent.id)
    assert len(due) == 1 and due[0].data["sponsor"] == staff.username  # the owner
    with time_machine.travel(start + timedelta(days=91), tick=False):
        api = APIClient()
        api.force_login(staff)  # a login of the day
        assert attestations_enforce_task(str(org.id)) == {"warned": 0, "suspended": 1}
        assert agent_row(org, agent.agent.id).status == "suspended"
        suspended = events(org, "agent.suspended", agent.agent.id)[-1]
        assert suspended.data["reason"] == "attestation_lapsed"
        # reactivating needs an attestation first
        assert (
            api.post(f"/agents/{agent.agent.id}/reactivate", {}, format="json").status_code == 409
        )
        attested = api.post("/agents/attest", {"agents": [str(agent.agent.id)]}, format="json")
        assert attested.status_code == 200 and attested.json() == {"attested": 1}
        assert (
            api.post(f"/agents/{agent.agent.id}/reactivate", {}, format="json").status_code == 200
        )
        row = agent_row(org, agent.agent.id)
    assert row.attested_at is not None and row.attested_at >= start + timedelta(days=91)
    # the period is the organization's (owners set it in the admin, platform staff in the API)
    assert platform_api.patch(f"/organizations/{org.id}", {"attestation_period_days": 30},
                     format="json").json()["attestation_period_days"] == 30  # fmt: skip
    assert platform_api.patch(f"/organizations/{org.id}", {"attestation_period_days": 0},
                     format="json").status_code == 400  # fmt: skip


def test_attest_refuses_other_organizations_agents_and_bad_bodies(
    api: APIClient, org: Organization, foreign_agent: Agent, agent: Agent
) -> None:
    before = agent_row(org, agent.id).attested_at
    for body in (
        {"agents": [str(foreign_agent.id)]},
        {"agents": [str(agent.id), str(uuid.uuid4())]},
    ):
        assert api.post("/agents/attest", body, format="json").status_code == 404
    bad: list[dict[str, Any]] = [{}, {"agents": []}, {"agents": ["not-a-uuid"]}, {"agents": "x"}]
    for body in bad:
        assert api.post("/agents/attest", body, format="json").status_code == 400
    assert agent_row(org, agent.id).attested_at == before  # nothing half-applied


def test_the_kill_switch_stops_one_sponsors_agents_or_all_of_them(
    api: APIClient, staff: User, org: Organization
) -> None:
    mine = [credentialed(org, ["agents:read"]) for _ in range(2)]
    others = [credentialed(org, ["agents:read"]) for _ in range(2)]
    colleague: User = StaffFactory(organization=org, role=MemberRole.MEMBER)
    for agent, sponsor in zip(mine + others, [staff, staff, colleague, colleague], strict=True):
        api.put(f"/agents/{agent.agent.id}/sponsor", {"username": sponsor.username},
                format="json")  # fmt: skip
    tokens = [token_for(a, "agents:read") for a in mine + others]
    stopped = api.post("/agents/kill-switch", {"sponsor": staff.username, "reason": "incident"},
                       format="json")  # fmt: skip
    assert stopped.status_code == 200, stopped.content
    assert stopped.json() == {"suspended": 2}
    assert [agent_row(org, a.agent.id).status for a in mine + others] == (
        ["suspended"] * 2 + ["active"] * 2
    )
    assert [active(t, others[0]) for t in tokens] == [False, False, True, True]
    switch = events(org, "agents.kill_switch")[-1]
    assert (switch.data["sponsor"], switch.data["suspended"], switch.data["reason"]) == (
        staff.username,
        2,
        "incident",
    )
    assert api.post("/agents/kill-switch", {"sponsor": "nobody"}, format="json").status_code == 404
    everything = api.post("/agents/kill-switch", {}, format="json")
    assert everything.json() == {"suspended": 2}
    with tenant_context(org.id):
        assert not Agent.objects.filter(organization_id=org.id, status="active").exists()


def test_the_kill_switch_is_for_writers_only(org: Organization) -> None:
    reader = credentialed(org, ["agents:read"])
    response = APIClient().post(
        "/agents/kill-switch", {}, format="json",
        HTTP_AUTHORIZATION=f"Bearer {token_for(reader, 'agents:read')}",
    )  # fmt: skip
    assert response.status_code == 403
    assert agent_row(org, reader.agent.id).status == "active"


def test_createagent_takes_the_longest_standing_owner_or_the_sponsor_named(
    org: Organization, other_org: Organization
) -> None:
    def create(*extra: str) -> dict[str, Any]:
        out = io.StringIO()
        call_command("createagent", "--org", org.slug, f"cmd-{uuid.uuid4().hex[:6]}", *extra,
                     stdout=out)  # fmt: skip
        document: dict[str, Any] = json.loads(out.getvalue())
        return document

    first = StaffFactory(organization=org, role=MemberRole.OWNER)
    StaffFactory(organization=org, role=MemberRole.OWNER)  # a newer owner
    assert create()["sponsor"] == first.username
    colleague = StaffFactory(organization=org, role=MemberRole.AUDITOR)
    assert create("--sponsor", colleague.username)["sponsor"] == colleague.username
    with pytest.raises(CommandError, match="sponsor"):
        create("--sponsor", StaffFactory(organization=other_org).username)


def test_deleting_a_sponsors_login_stops_their_agents_first(org: Organization) -> None:
    person = StaffFactory(organization=org, role=MemberRole.ADMIN)
    theirs = credentialed(org, ["agents:read"])
    api = APIClient()
    api.force_login(person)
    api.put(f"/agents/{theirs.agent.id}/sponsor", {"username": person.username}, format="json")
    with platform_context(reason="tests"):
        person.delete()
    row = agent_row(org, theirs.agent.id)
    assert (row.status, row.sponsor_id) == ("suspended", None)
    reason = events(org, "agent.suspended", theirs.agent.id)[-1].data["reason"]
    assert reason == f"sponsor_deleted: {person.username}"
