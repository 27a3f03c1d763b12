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
from tests.webhooks.conftest import agentidp_override


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
                "verified": True,
                "checked": 4,
                "brokenAtEventId": None,
                "from": 1,
                "to": None,
                "valid": True,
                "events_checked": 4,
                "head_sequence": 4,
                "complete": True,
                "checks": {
                    "checkpoints": 0,
                    "roots_compared": 0,
                    "signatures_verified": 0,
                    "copy": {"store": "vault", "anchors": 0, "latest_number": None},
                    "newest_checkpoint": None,
                },
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
        "code": "altered",
        "checkpoint": None,
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


def test_verify_reports_verified_checked_and_the_broken_event(
    chain: Organization, client_for: Callable[..., APIClient]
) -> None:
    altered = tamper(chain.id, 3)  # before this test's transaction reads the table
    api = client_for(StaffFactory(organization=chain, role="auditor"))
    whole = api.get("/audit/verify").json()
    assert (whole["verified"], whole["checked"], whole["brokenAtEventId"]) == (
        False, 2, str(altered),
    )  # fmt: skip
    part = api.get("/audit/verify", {"from": "1", "to": "2"}).json()
    assert (part["verified"], part["checked"], part["from"], part["to"]) == (True, 2, 1, 2)
    broken = api.get("/audit/verify", {"from": "2"}).json()
    assert broken["verified"] is False and broken["brokenAtEventId"] == str(altered)
    assert broken["checked"] == 1  # event 2 verified, event 3 is the break
    after = api.get("/audit/verify", {"from": "4"}).json()
    # the range after the break (the audit.integrity_failed events each failed verification
    # recorded are on the platform's chain, not in the log they are about)
    assert after["verified"] is True and after["checked"] == 2


@pytest.mark.parametrize(
    "query",
    [{"from": "x"}, {"from": "0"}, {"to": ""}, {"from": "3", "to": "2"}, {"from": "1\x00"},
     {"to": str(2**70)}],
)  # fmt: skip
def test_verify_refuses_a_bad_range(
    chain: Organization, client_for: Callable[..., APIClient], query: dict[str, str]
) -> None:
    api = client_for(StaffFactory(organization=chain, role="auditor"))
    response = api.get("/audit/verify", query)
    assert response.status_code == 400 and response["Content-Type"] == "application/problem+json"


def test_verify_is_rate_limited_per_organization(
    chain: Organization, org: Organization, client_for: Callable[..., APIClient]
) -> None:
    restore = agentidp_override(AUDIT_VERIFY_RATE="2/min")
    try:
        api = client_for(StaffFactory(organization=chain, role="auditor"))
        assert [api.get("/audit/verify").status_code for _ in range(2)] == [200, 200]
        limited = api.get("/audit/verify")
        assert limited.status_code == 429 and int(limited["Retry-After"]) > 0
        assert limited["Content-Type"] == "application/problem+json"
        other = client_for(StaffFactory(organization=org, role="auditor"))
        assert other.get("/audit/verify").status_code == 200  # another organization's budget
    finally:
        restore()
