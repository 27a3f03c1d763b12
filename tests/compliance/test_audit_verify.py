"""Verifying audit chains: the command for operators (every organization, deleted ones too),
the endpoint for an organization, the log line naming what broke, and /audit flagging rows."""

import io
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from agentidp.tenancy import platform_context, tenant_context
from agents.services import agent_suspend
from compliance.models import AuditEvent
from compliance.services import audit_event_hash
from organizations.models import Organization
from organizations.services import organization_delete, organization_suspend
from tests.dbroles import raw_connection
from tests.factories import TEST_ACTOR, AgentFactory, OrganizationFactory, StaffFactory


@pytest.fixture
def chain(run_in_threads: Callable[..., list[Any]]) -> Organization:
    """A committed organization with a chain of four events."""

    def build() -> Organization:
        organization = OrganizationFactory()  # organization.created
        agent = AgentFactory(organization=organization, name="one")  # agent.created, did.created
        with tenant_context(organization.id):
            agent_suspend(actor=TEST_ACTOR, organization_id=organization.id, agent_id=agent.id)
        return organization

    (organization,) = run_in_threads(build)
    assert isinstance(organization, Organization)
    return organization


def tamper(organization_id: uuid.UUID, sequence: int, *, rehash: bool = False) -> uuid.UUID:
    """An attacker with the owner role rewrites one event (and, with rehash, its hash)."""
    with tenant_context(organization_id):
        event = AuditEvent.objects.get(organization_id=organization_id, sequence=sequence)
    event.data = {"name": "innocent"}
    new_hash = audit_event_hash(event) if rehash else event.hash
    with raw_connection("owner") as conn:
        conn.execute(
            "ALTER TABLE compliance_auditevent DISABLE TRIGGER compliance_auditevent_append_only"
        )
        conn.execute(
            'UPDATE compliance_auditevent SET data = \'{"name": "innocent"}\', hash = %s'
            " WHERE organization_id = %s AND sequence = %s",
            [new_hash, organization_id, sequence],
        )
        conn.execute(
            "ALTER TABLE compliance_auditevent ENABLE TRIGGER compliance_auditevent_append_only"
        )
        conn.commit()
    return event.id


def run_command(*args: str) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    try:
        call_command("verifyauditchain", *args, stdout=out)
        code = 0
    except SystemExit as exit_:
        code = int(str(exit_.code))
    document: dict[str, Any] = json.loads(out.getvalue())
    return code, document


def report_for(document: dict[str, Any], organization: Organization) -> dict[str, Any]:
    reports: list[dict[str, Any]] = document["organizations"]
    (report,) = [r for r in reports if r["organization_id"] == str(organization.id)]
    return report


def test_the_command_verifies_one_organization(chain: Organization) -> None:
    code, document = run_command("--org", chain.slug)
    assert code == 0
    assert document == {
        "valid": True,
        "organizations_checked": 1,
        "organizations": [
            {
                "organization_id": str(chain.id),
                "valid": True,
                "events_checked": 4,
                "head_sequence": 4,
            }
        ],
    }


def test_the_command_names_the_first_bad_event_and_fails(
    chain: Organization, caplog: pytest.LogCaptureFixture
) -> None:
    event_id = tamper(chain.id, 3)
    with caplog.at_level(logging.ERROR, logger="agentidp.audit"):
        code, document = run_command()
    assert code == 1 and document["valid"] is False
    report = report_for(document, chain)
    assert report["first_invalid"] == {
        "sequence": 3,
        "event_id": str(event_id),
        "reason": "hash does not match the event's contents",
    }
    logged = [r.getMessage() for r in caplog.records if str(chain.id) in r.getMessage()]
    assert logged and str(event_id) in logged[0] and "sequence 3" in logged[0]


def test_deleted_organizations_chains_are_verified(
    chain: Organization, run_in_threads: Callable[..., list[Any]]
) -> None:
    def delete() -> None:
        with platform_context(reason="tests"):
            organization_suspend(actor=TEST_ACTOR, organization_id=chain.id)
            organization_delete(actor=TEST_ACTOR, organization_id=chain.id)

    assert run_in_threads(delete) == [None]
    tamper(chain.id, 2)
    code, document = run_command()
    assert code == 1
    assert report_for(document, chain)["first_invalid"]["sequence"] == 2
    code, document = run_command("--org", str(chain.id))
    assert code == 1 and document["organizations"][0]["valid"] is False


def test_the_audit_list_flags_tampered_rows(
    chain: Organization, client_for: Callable[..., APIClient]
) -> None:
    altered = tamper(chain.id, 2)
    rehashed = tamper(chain.id, 4, rehash=True)
    staff = StaffFactory(organization=chain, role="auditor")
    api = client_for(staff)
    response = api.get("/audit")
    assert response.status_code == 200, response.content
    flags = {e["sequence"]: e["integrity"] for e in response.json()["results"]}
    # 5 (the auditor's creation) follows 4, which was rewritten with a fresh hash
    assert flags == {1: "ok", 2: "altered", 3: "ok", 4: "ok", 5: "unlinked"}
    assert rehashed in {uuid.UUID(e["id"]) for e in response.json()["results"]}
    # with a page of one, the predecessor is fetched to check the link
    response = api.get("/audit", {"page_size": "1", "action": "agent.suspended"})
    assert response.json()["results"][0]["integrity"] == "ok"
    verify = api.get("/audit/verify").json()
    assert verify["valid"] is False
    assert verify["first_invalid"]["event_id"] == str(altered)


def test_a_rehashed_event_unlinks_its_successor(
    chain: Organization, client_for: Callable[..., APIClient]
) -> None:
    tamper(chain.id, 3, rehash=True)
    api = client_for(StaffFactory(organization=chain, role="auditor"))
    flags = {e["sequence"]: e["integrity"] for e in api.get("/audit").json()["results"]}
    assert flags == {1: "ok", 2: "ok", 3: "ok", 4: "unlinked", 5: "ok"}
    verify = api.get("/audit/verify").json()
    assert verify["first_invalid"]["sequence"] == 4


def test_verify_needs_the_audit_scope(
    chain: Organization, client_for: Callable[..., APIClient]
) -> None:
    api = client_for(StaffFactory(organization=chain, role="member"))
    assert api.get("/audit/verify").status_code == 403
    assert APIClient().get("/audit/verify").status_code == 401


@pytest.mark.parametrize("key", ["no-such-org", "bad\x00slug", str(uuid.uuid4())])
def test_the_command_refuses_an_unknown_organization_cleanly(key: str) -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No organization"):
        call_command("verifyauditchain", "--org", key, stdout=io.StringIO())
