"""The audit log in the admin as a person reads it: names, whole ids, links to subjects,
filters, and an export an auditor verifies offline."""

import base64
import csv
import html
import io
import json
import re
from datetime import timedelta

from django.contrib.auth.models import User
from django.http import StreamingHttpResponse
from django.test import Client
from django.utils import timezone

from agentidp.principals import Principal
from agentidp.tenancy import tenant_context
from agents.models import Agent
from compliance.integrity import checkpoint_publish
from compliance.jobs import job_recorded
from compliance.merkle import leaf_hash
from compliance.models import AuditEvent
from organizations.choices import MemberRole
from organizations.models import Organization
from tests.compliance.test_merkle import verify_inclusion
from tests.factories import StaffFactory
from tests.oidc.conftest import credentialed, request_token
from tests.platform.test_admin import _login

EVENTS = "/admin/compliance/auditevent/"


def _streamed(response: object) -> bytes:
    assert isinstance(response, StreamingHttpResponse), type(response)
    return response.getvalue()


def _text(page: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def _as_owner_edit_an_agent(staff: User, org: Organization) -> Agent:
    cred = credentialed(org, name="billing-bot")
    request_token(cred)  # token.issued, by the agent itself
    client = _login(staff)
    page = f"/admin/agents/agent/{cred.agent.id}/"
    assert client.post(f"{page}suspend/", {"confirmed": "yes"}).status_code == 302
    return cred.agent


def test_actors_by_name_ids_whole_and_subjects_linked(staff: User, org: Organization) -> None:
    agent = _as_owner_edit_an_agent(staff, org)
    with tenant_context(org.id):
        checkpoint_publish(organization_id=org.id, actor=Principal.system("beat:audit-checkpoint"))
    auditor = _login(StaffFactory(organization=org, role=MemberRole.AUDITOR))
    page = auditor.get(EVENTS).content.decode()
    text = _text(page)
    assert f"{staff.username} (owner)" in text  # the person, not "user 7"
    assert "agent billing-bot" in text  # the agent that asked for a token
    assert "beat: audit-checkpoint" in text  # the job
    assert f"user {staff.pk}" not in text
    assert f'<code class="agentidp-id">{agent.id}</code>' in page  # whole, not truncated
    assert f'href="/admin/agents/agent/{agent.id}/change/"' in page  # to its subject
    assert "…" not in text
    # a subject with no admin page of its own (a checkpoint) links to its events
    links = {
        html.unescape(h)
        for h in re.findall(r'href="([^"]*subject=audit_checkpoint%3A[^"]*)"', page)
    }
    assert links and all(link.startswith(EVENTS) for link in links)
    assert all(auditor.get(link).status_code == 200 for link in links)
    with tenant_context(org.id):
        suspended = AuditEvent.objects.get(organization_id=org.id, action="agent.suspended")
    detail = _text(auditor.get(f"{EVENTS}{suspended.id}/change/").content.decode())
    assert f"{staff.username} (owner)" in detail and str(agent.id) in detail
    assert suspended.hash in detail and suspended.previous_hash in detail


def test_filters_by_action_actor_subject_and_dates(staff: User, org: Organization) -> None:
    agent = _as_owner_edit_an_agent(staff, org)
    client = _login(staff)
    listing = _text(client.get(EVENTS).content.decode())
    for title in ("By action", "By actor", "By subject", "By date range"):
        assert title in listing, title

    def sequences(**params: str) -> set[str]:
        page = client.get(EVENTS, params).content.decode()
        assert "?e=1" not in page
        return set(
            re.findall(r'href="/admin/compliance/auditevent/[^/]+/change/[^"]*">(\d+)<', page)
        )

    everything = sequences()
    suspended = sequences(action="agent.suspended")
    assert len(suspended) == 1 and suspended < everything
    by_owner = sequences(actor=f"user:{staff.pk}")
    with tenant_context(org.id):
        owners = AuditEvent.objects.filter(
            organization_id=org.id, actor_type="user", actor_id=str(staff.pk)
        )
        about_agent = AuditEvent.objects.filter(
            organization_id=org.id, subject_type="agent", subject_id=str(agent.id)
        )
        assert by_owner == {str(e.sequence) for e in owners}
        assert sequences(subject=f"agent:{agent.id}") == {str(e.sequence) for e in about_agent}
    assert sequences(subject="agent") >= sequences(subject=f"agent:{agent.id}")
    today = timezone.now().date()
    assert sequences(occurred_from=today.isoformat(), occurred_to=today.isoformat()) == everything
    assert sequences(occurred_to=(today - timedelta(days=1)).isoformat()) == set()
    refused = _text(client.get(EVENTS, {"occurred_from": "yesterday"}).content.decode())
    assert "'yesterday' is not a date (YYYY-MM-DD)." in refused
    assert client.get(EVENTS, {"actor": "nobody:x", "subject": "no:such"}).status_code == 200


def test_the_export_carries_what_an_auditor_verifies_offline(
    staff: User, org: Organization, client_for: object
) -> None:
    _as_owner_edit_an_agent(staff, org)
    with tenant_context(org.id):
        published = checkpoint_publish(organization_id=org.id, actor=Principal.system("tests"))
    checkpoint = published.checkpoint
    assert checkpoint is not None
    auditor_user = StaffFactory(organization=org, role=MemberRole.AUDITOR)  # after: not signed yet
    auditor = _login(auditor_user)
    listing = auditor.get(EVENTS, {"action": "agent.suspended"}).content.decode()
    (csv_link,) = re.findall(r'href="([^"]*export\.csv[^"]*)"', listing)
    assert "action=agent.suspended" in html.unescape(csv_link)  # the filters the list shows

    exported = auditor.get(f"{EVENTS}export.csv")
    assert exported["Content-Type"].startswith("text/csv")
    assert f"agentidp-audit-{org.slug}-" in exported["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(_streamed(exported).decode())))
    with tenant_context(org.id):
        events = list(AuditEvent.objects.filter(organization_id=org.id).order_by("sequence"))
    assert [int(r["sequence"]) for r in rows] == [e.sequence for e in events]  # every page
    for row, event in zip(rows, events, strict=True):
        assert (row["id"], row["hash"], row["previous_hash"]) == (
            str(event.id),
            event.hash,
            event.previous_hash,
        )
        assert json.loads(row["data"]) == event.data
    for earlier, later in zip(rows, rows[1:], strict=False):
        assert later["previous_hash"] == earlier["hash"]  # the chain, checkable from the file
    signed = [r for r in rows if int(r["sequence"]) <= checkpoint.tree_size]
    pending = [r for r in rows if int(r["sequence"]) > checkpoint.tree_size]
    assert signed and pending  # the auditor's own creation came after the checkpoint
    assert all(r["checkpoint_tree_size"] == "" and r["proof"] == "" for r in pending)
    (row,) = [r for r in signed if r["action"] == "agent.suspended"]
    assert row["actor"] == f"{staff.username} (owner)"
    assert row["checkpoint_root_hash"] == checkpoint.root_hash
    assert int(row["checkpoint_tree_size"]) == checkpoint.tree_size
    # the proof it names, fetched as the auditor would, checks against the signed root
    api = client_for(auditor_user)  # type: ignore[operator]
    path = row["proof"].split("://", 1)[1].split("/", 1)[1]
    proof = api.get(f"/{path}").json()
    assert proof["leaf_index"] == int(row["leaf_index"]) == int(row["sequence"]) - 1
    assert verify_inclusion(
        leaf_hash(bytes.fromhex(row["hash"])), int(row["leaf_index"]), checkpoint.tree_size,
        [base64.b64decode(p) for p in proof["inclusion_path"]],
        bytes.fromhex(row["checkpoint_root_hash"]),
    )  # fmt: skip

    lines = _streamed(auditor.get(f"{EVENTS}export.jsonl", {"action": "agent.suspended"}))
    (only,) = [json.loads(line) for line in lines.decode().splitlines()]
    assert only["action"] == "agent.suspended" and only["actor"] == f"{staff.username} (owner)"
    assert only["hash"] == row["hash"] and only["proof"] == row["proof"]
    member = _login(StaffFactory(organization=org, role=MemberRole.MEMBER))
    assert member.get(f"{EVENTS}export.csv").status_code == 403  # no audit:read


def test_job_runs_name_the_organization(superuser: User, org: Organization) -> None:
    with tenant_context(org.id):
        checkpoint_publish(organization_id=org.id, actor=Principal.system("tests"))
    with job_recorded("audit-checkpoint", organization_id=org.id):
        pass
    page = _text(_login(superuser).get("/admin/compliance/jobrun/").content.decode())
    assert org.slug in page and str(org.id) not in page


def test_the_list_of_another_organization_is_not_exported(
    staff: User, other_org: Organization, org: Organization
) -> None:
    credentialed(other_org, name="elsewhere-bot")
    exported = _login(staff).get(f"{EVENTS}export.jsonl")
    body = _streamed(exported).decode()
    assert "elsewhere-bot" not in body and str(other_org.id) not in body
    assert all(json.loads(line)["organization"] == org.slug for line in body.splitlines())


def test_a_client_that_is_not_logged_in_gets_nothing(org: Organization) -> None:
    response = Client().get(f"{EVENTS}export.csv")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
