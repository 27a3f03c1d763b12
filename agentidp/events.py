"""The one function every service calls to record a domain event.

It writes the hash-chained audit row in the caller's transaction, so an event exists exactly
when its change commits. The webhook outbox row is written beside it here too once the webhooks
app exists; delivery starts from ``transaction.on_commit``.
"""

import uuid
from collections.abc import Mapping

from agentidp.deferred import defer_after_request
from agentidp.errors import JSONValue
from agentidp.principals import Principal
from agentidp.tenancy import tenant_context
from compliance.models import AuditEvent
from compliance.services import CompanionInsert, audit_event_append


def event_record(
    *,
    organization_id: uuid.UUID,
    actor: Principal,
    action: str,
    subject_type: str,
    subject_id: str,
    data: Mapping[str, JSONValue] | None = None,
    outcome: str = "success",
    companion: CompanionInsert | None = None,
) -> AuditEvent:
    """Record ``action`` on ``subject`` by ``actor``; ``data`` must never hold a secret.

    ``companion``: the INSERT that made the change, sent in the same statement (one round trip
    on a hot path); its new row's id is left on it as ``inserted_id``.
    """
    return audit_event_append(
        organization_id=organization_id,
        actor_type=actor.kind,
        actor_id=actor.id,
        action=action,
        subject_type=subject_type,
        subject_id=subject_id,
        data=data or {},
        outcome=outcome,
        companion=companion,
    )


def event_record_after_request(
    *,
    organization_id: uuid.UUID,
    actor: Principal,
    action: str,
    subject_type: str,
    subject_id: str,
    data: Mapping[str, JSONValue] | None = None,
    outcome: str = "failure",
) -> None:
    """Record an event after the request's transaction ends, whether it commits or not (the
    tenancy middleware runs it; outside a request, at once)."""

    def record() -> None:
        with tenant_context(organization_id):
            event_record(
                organization_id=organization_id,
                actor=actor,
                action=action,
                subject_type=subject_type,
                subject_id=subject_id,
                data=data,
                outcome=outcome,
            )

    if not defer_after_request(record):
        record()
