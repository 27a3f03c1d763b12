"""Attacks on the audit log as the database's superuser would make them (triggers off), for the
tests that check each is detected. Each takes a committed organization's id."""

import json
import uuid
from typing import Any

from agentidp.events import event_record
from agentidp.tenancy import tenant_context
from compliance.models import AuditEvent
from compliance.services import audit_event_hash
from organizations.models import Organization
from tests.dbroles import superuser_connection
from tests.factories import TEST_ACTOR


def append(organization: Organization, count: int) -> None:
    with tenant_context(organization.id):
        for n in range(count):
            event_record(
                organization_id=organization.id, actor=TEST_ACTOR, action="agent.updated",
                subject_type="agent", subject_id=str(n), data={"n": n},
            )  # fmt: skip


def _rows(conn: Any, organization_id: uuid.UUID) -> list[AuditEvent]:
    cursor = conn.execute(
        "SELECT id, sequence, occurred_at, actor_type, actor_id, action, outcome, subject_type,"
        " subject_id, data, previous_hash, hash FROM compliance_auditevent"
        " WHERE organization_id = %s ORDER BY sequence",
        [organization_id],
    )
    names = ["id", "sequence", "occurred_at", "actor_type", "actor_id", "action", "outcome",
             "subject_type", "subject_id", "data", "previous_hash", "hash"]  # fmt: skip
    return [
        AuditEvent(organization_id=organization_id, **dict(zip(names, row, strict=True)))
        for row in cursor
    ]


def edit(organization_id: uuid.UUID) -> None:
    """Change event 10's data, nothing else."""
    with superuser_connection() as conn:
        conn.execute(
            "UPDATE compliance_auditevent SET data = '{\"n\": 999}'"
            " WHERE organization_id = %s AND sequence = 10",
            [organization_id],
        )
        conn.commit()


def rechain(organization_id: uuid.UUID) -> None:
    """Change event 10's data, recompute every hash from 10 to the end, and the chain head:
    the hash chain verifies."""
    with superuser_connection() as conn:
        events = _rows(conn, organization_id)
        previous = events[8].hash
        for event in events[9:]:
            if event.sequence == 10:
                event.data = {"n": 999}
            event.previous_hash = previous
            event.hash = audit_event_hash(event)
            previous = event.hash
            conn.execute(
                "UPDATE compliance_auditevent SET data = %s::jsonb, previous_hash = %s, hash = %s"
                " WHERE id = %s",
                [json.dumps(event.data), event.previous_hash, event.hash, event.id],
            )
        conn.execute(
            "UPDATE compliance_auditchainhead SET hash = %s WHERE organization_id = %s",
            [previous, organization_id],
        )
        conn.commit()


def truncate(organization_id: uuid.UUID) -> None:
    """Delete the last two events and move the chain head back: the hash chain verifies."""
    with superuser_connection() as conn:
        conn.execute(
            "DELETE FROM compliance_auditevent WHERE organization_id = %s AND sequence > 19",
            [organization_id],
        )
        conn.execute(
            "UPDATE compliance_auditchainhead h SET sequence = 19, hash = e.hash"
            " FROM compliance_auditevent e WHERE e.organization_id = h.organization_id"
            " AND e.sequence = 19 AND h.organization_id = %s",
            [organization_id],
        )
        conn.commit()


def delete_tail(organization_id: uuid.UUID) -> None:
    """Delete the last two events, leaving the chain head where it was."""
    with superuser_connection() as conn:
        conn.execute(
            "DELETE FROM compliance_auditevent WHERE organization_id = %s AND sequence > 19",
            [organization_id],
        )
        conn.commit()
