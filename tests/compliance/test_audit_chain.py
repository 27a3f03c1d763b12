"""The audit hash chain: append-only in the database, gapless under concurrent writers."""

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from agentidp.errors import JSONValue
from agentidp.events import event_record
from agentidp.tenancy import tenant_context
from agents.models import Agent
from agents.services import agent_register, agent_suspend
from compliance.models import GENESIS_HASH, AuditEvent
from compliance.services import audit_chain_verify, audit_event_hash
from organizations.models import Organization
from tests.dbroles import raw_connection
from tests.factories import TEST_ACTOR, AgentFactory, OrganizationFactory


def test_services_record_chained_events(org: Organization) -> None:
    agent = AgentFactory(organization=org)
    with tenant_context(org.id):
        agent_suspend(actor=TEST_ACTOR, organization_id=org.id, agent_id=agent.id, reason="test")
        events = list(AuditEvent.objects.filter(organization_id=org.id).order_by("sequence"))
        verification = audit_chain_verify(organization_id=org.id)
    assert [e.action for e in events] == [
        "organization.created",
        "agent.created",
        "did.created",
        "agent.suspended",
    ]
    assert [e.sequence for e in events] == [1, 2, 3, 4]
    assert events[0].previous_hash == GENESIS_HASH
    for previous, event in zip(events, events[1:], strict=False):
        assert event.previous_hash == previous.hash
    assert all(audit_event_hash(e) == e.hash for e in events)
    assert events[3].actor_type == "system" and events[3].actor_id == "tests"
    assert events[3].data == {"from": "active", "to": "suspended", "reason": "test"}
    assert verification.valid and verification.events_checked == 4


def test_chains_are_per_organization(org: Organization, other_org: Organization) -> None:
    AgentFactory(organization=org)
    with tenant_context(other_org.id):
        first = AuditEvent.objects.get(organization_id=other_org.id)
    assert first.sequence == 1 and first.previous_hash == GENESIS_HASH


@pytest.fixture
def committed_org(run_in_threads: Callable[..., list[Any]]) -> Organization:
    def build() -> Organization:
        organization = OrganizationFactory()
        AgentFactory(organization=organization, name="audited")
        return organization

    (organization,) = run_in_threads(build)
    assert isinstance(organization, Organization)
    return organization


@pytest.mark.parametrize("alias", ["default", "owner"])
def test_database_refuses_update_and_delete(committed_org: Organization, alias: str) -> None:
    with raw_connection(alias) as conn:
        conn.execute("SELECT set_config('app.organization_id', %s, false)", [str(committed_org.id)])
        conn.commit()
        for statement in (
            "UPDATE compliance_auditevent SET action = 'forged' WHERE organization_id = %s",
            "DELETE FROM compliance_auditevent WHERE organization_id = %s",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement, [committed_org.id])
            conn.rollback()
        count = conn.execute(
            "SELECT count(*) FROM compliance_auditevent WHERE organization_id = %s",
            [committed_org.id],
        ).fetchone()
    assert count == (3,)  # organization.created, agent.created, did.created


def test_owner_hits_the_trigger_itself(committed_org: Organization) -> None:
    with raw_connection("owner") as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(
                "DELETE FROM compliance_auditevent WHERE organization_id = %s", [committed_org.id]
            )


def test_verification_detects_a_tampered_event(committed_org: Organization) -> None:
    # An attacker with the owner role switches the trigger off and rewrites history.
    with raw_connection("owner") as conn:
        conn.execute(
            "ALTER TABLE compliance_auditevent DISABLE TRIGGER compliance_auditevent_append_only"
        )
        conn.execute(
            'UPDATE compliance_auditevent SET data = \'{"name": "innocent"}\''
            " WHERE organization_id = %s AND sequence = 2",
            [committed_org.id],
        )
        conn.execute(
            "ALTER TABLE compliance_auditevent ENABLE TRIGGER compliance_auditevent_append_only"
        )
        conn.commit()
    with tenant_context(committed_org.id):
        result = audit_chain_verify(organization_id=committed_org.id)
    assert not result.valid
    assert result.first_invalid_sequence == 2
    assert "hash" in result.reason


def test_concurrent_writers_never_fork_the_chain(
    committed_org: Organization, run_in_threads: Callable[..., list[Any]]
) -> None:
    writers, per_writer = 8, 5

    def writer(index: int) -> Callable[[], int]:
        def run() -> int:
            for n in range(per_writer):
                with tenant_context(committed_org.id):
                    agent_register(
                        actor=TEST_ACTOR,
                        organization_id=committed_org.id,
                        name=f"writer-{index}-{n}",
                        sponsor=f"sponsor-{committed_org.slug}",  # tests.factories
                    )
            return per_writer

        return run

    results = run_in_threads(*(writer(i) for i in range(writers)))
    assert results == [per_writer] * writers
    with tenant_context(committed_org.id):
        sequences = list(
            AuditEvent.objects.filter(organization_id=committed_org.id)
            .order_by("sequence")
            .values_list("sequence", flat=True)
        )
        verification = audit_chain_verify(organization_id=committed_org.id)
        agents = Agent.objects.filter(organization_id=committed_org.id).count()
    expected = 3 + writers * per_writer * 2  # each registration: agent.created, did.created
    assert sequences == list(range(1, expected + 1))
    assert verification.valid, verification.reason
    assert verification.events_checked == expected
    assert agents == 1 + writers * per_writer


def test_chain_verification_agrees_with_the_hash_on_awkward_contents(org: Organization) -> None:
    """The verifier assembles each event's canonical bytes from the row as fetched; on every
    kind of JSON value and on strings that need escaping it must agree with the hash the event
    was written with, or a sound chain would be reported broken."""
    awkward: list[dict[str, JSONValue]] = [
        {"quote": 'a"b', "backslash": "c\\d", "control": "\x01\x1f\t\n\r\b\f", "del": "\x7f"},
        {"unicode": "é ✓ 𝄞 \u2028", "ключ": "значение", "Z": 1, "a": 2, "é": 3, "B": [3, 2, 1]},
        {"floats": [1.5, 1e-07, 1e16, -0.0, 123456789.125], "big": 2**63 + 1, "neg": -7},
        {"nested": {"b": {"c": [None, True, False, {"d": [], "e": {}}]}, "a": "x" * 500}},
        {},
    ]
    with tenant_context(org.id):
        for n, data in enumerate(awkward):
            event_record(
                organization_id=org.id, actor=TEST_ACTOR, action="agent.updated",
                subject_type="agent", subject_id=f'sub"ject\\{n}é', data=data,
            )  # fmt: skip
        verification = audit_chain_verify(organization_id=org.id)
        numbers = AuditEvent.objects.get(organization_id=org.id, sequence=4).data
    assert verification.valid, verification
    assert verification.events_checked == 1 + len(awkward)
    # jsonb keeps numbers as numeric: the hash covers them as they come back
    assert numbers["floats"] == [1.5, 1e-07, 10**16, 0.0, 123456789.125]
    assert numbers["big"] == 2**63 + 1
