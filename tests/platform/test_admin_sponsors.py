"""Sponsors in the admin, as staff use it: who answers for each agent and when its attestation
falls due, in the agent list; a bulk Attest; the sponsor chosen on the agent's page; and the
kill switch, whose confirmation page names how many agents and live tokens it stops."""

import uuid
from datetime import timedelta

import time_machine
from django.contrib.auth.models import User
from django.utils import timezone

from agentidp.tenancy import tenant_context
from agents.models import Agent
from organizations.choices import MemberRole
from organizations.models import Organization
from tests.factories import StaffFactory
from tests.oidc.conftest import credentialed
from tests.platform.test_admin import _login
from tests.platform.test_admin_staff import _live_tokens, _page, _text

AGENTS = "/admin/agents/agent/"


def _agent(org: Organization, agent_id: uuid.UUID) -> Agent:
    with tenant_context(org.id):
        return Agent.objects.select_related("sponsor").get(id=agent_id)


def test_staff_see_who_answers_for_each_agent_and_attest_the_lapsed_in_bulk(
    staff: User, org: Organization
) -> None:
    due, fine = credentialed(org), credentialed(org)
    start = timezone.now()
    with time_machine.travel(start + timedelta(days=91), tick=False):
        with tenant_context(org.id):  # one was attested since
            Agent.objects.filter(id=fine.agent.id).update(attested_at=timezone.now())
        client = _login(staff)
        listing = _text(_page(client, AGENTS))
        assert f"{due.agent.name} Active" in listing and staff.username in listing
        assert f"lapsed {(start + timedelta(days=90)):%Y-%m-%d}" in listing
        lapsed = _text(_page(client, f"{AGENTS}?attestation=lapsed"))
        assert due.agent.name in lapsed and fine.agent.name not in lapsed
        done = client.post(
            AGENTS, {"action": "attest_action", "_selected_action": [str(due.agent.id)]}
        )
        assert done.status_code == 302
        assert _agent(org, due.agent.id).attested_at == timezone.now()
        assert due.agent.name not in _text(_page(client, f"{AGENTS}?attestation=lapsed"))


def test_the_sponsor_is_chosen_on_the_agents_page_among_the_organizations_people(
    staff: User, org: Organization, other_org: Organization
) -> None:
    cred = credentialed(org)
    colleague = StaffFactory(organization=org, role=MemberRole.MEMBER)
    outsider = StaffFactory(organization=other_org)
    client = _login(staff)
    page = f"{AGENTS}{cred.agent.id}/change/"
    form = _page(client, page)
    assert f'value="{colleague.username}"' in form and outsider.username not in form
    fields = {"name": cred.agent.name, "metadata": "{}", "version": "1.0.0", "skills": "",
              "authors": "", "capabilities": "search"}  # fmt: skip
    saved = client.post(page, {**fields, "sponsor_username": colleague.username})
    assert saved.status_code == 302, saved.content.decode()[:2000]
    assert _agent(org, cred.agent.id).sponsor_username == colleague.username
    refused = client.post(page, {**fields, "sponsor_username": outsider.username})
    assert refused.status_code == 200  # not a choice: the form says so, nothing changes
    assert _agent(org, cred.agent.id).sponsor_username == colleague.username


def test_the_kill_switch_names_what_it_stops_before_stopping_it(
    staff: User, org: Organization
) -> None:
    colleague = StaffFactory(organization=org, role=MemberRole.ADMIN)
    theirs = [credentialed(org), credentialed(org)]
    mine = credentialed(org)
    with tenant_context(org.id):
        Agent.objects.filter(id__in=[c.agent.id for c in theirs]).update(sponsor=colleague)
    for cred in theirs:
        _live_tokens(cred, 2)
    client = _login(staff)
    assert "Kill switch" in _page(client, AGENTS)
    url = f"{AGENTS}kill-switch/?sponsor={colleague.username}"
    asked = _text(_page(client, url))
    assert f"Suspend every active agent sponsored by {colleague.username}?" in asked
    assert "Suspends 2 active agents at once" in asked and "Revokes 4 live tokens" in asked
    assert _agent(org, theirs[0].agent.id).status == "active"  # nothing yet
    done = client.post(url, {"confirmed": "yes", "sponsor": colleague.username,
                             "reason": "laptop stolen"})  # fmt: skip
    assert done.status_code == 302
    assert [_agent(org, c.agent.id).status for c in (*theirs, mine)] == [
        "suspended", "suspended", "active",
    ]  # fmt: skip
    whole = _text(_page(client, f"{AGENTS}kill-switch/"))
    assert f"Suspend every active agent of {org.name}?" in whole
    assert "Suspends 1 active agent at once" in whole
    # a member reads the agents but may not stop them
    reader = _login(StaffFactory(organization=org, role=MemberRole.AUDITOR))
    assert reader.get(f"{AGENTS}kill-switch/").status_code == 404
