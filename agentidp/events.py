"""The one function every service calls to record a domain event.

It writes the hash-chained audit row in the caller's transaction, so an event exists exactly
when its change commits. The webhook outbox row is written beside it here too once the webhooks
app exists; delivery starts from ``transaction.on_commit``.
"""

import uuid
from collections.abc import Mapping

from agentidp.errors import JSONValue
from agentidp.principals import Principal
from compliance.models import AuditEvent
from compliance.services import audit_event_append


def event_record(
    *,
    organization_id: uuid.UUID,
    actor: Principal,
    action: str,
    subject_type: str,
    subject_id: str,
    data: Mapping[str, JSONValue] | None = None,
    outcome: str = "success",
) -> AuditEvent:
    """Record ``action`` on ``subject`` by ``actor``; ``data`` must never hold a secret."""
    return audit_event_append(
        organization_id=organization_id,
        actor_type=actor.kind,
        actor_id=actor.id,
        action=action,
        subject_type=subject_type,
        subject_id=subject_id,
        data=data or {},
        outcome=outcome,
    )
