"""The one function every service calls to record a domain event.

It writes the hash-chained audit row in the caller's transaction, so an event exists exactly
when its change commits. The webhook outbox row is written beside it here too once the webhooks
app exists; delivery starts from ``transaction.on_commit``.
"""

import logging
import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar

from agentidp.errors import JSONValue
from agentidp.principals import Principal
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


logger = logging.getLogger("agentidp.events")

# Events that must outlive the request's transaction (an authentication failure answers 401, and
# a 4xx response rolls the request back). The tenancy middleware sets a list per request and
# records them afterwards, each in its own transaction.
DeferredEvent = Callable[[], None]
_deferred: ContextVar[list[DeferredEvent] | None] = ContextVar("agentidp_deferred", default=None)


def deferred_events_begin() -> list[DeferredEvent]:
    events: list[DeferredEvent] = []
    _deferred.set(events)
    return events


def deferred_events_run(events: list[DeferredEvent]) -> None:
    """Record deferred events; a failure to record one is logged, never raised to the caller."""
    _deferred.set(None)
    for record in events:
        try:
            record()
        except Exception:  # the response is already decided; losing the event must be visible
            logger.exception("could not record a deferred audit event")


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
    """Record an event after the request's transaction ends, whether it commits or not."""
    from agentidp.tenancy import tenant_context

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

    events = _deferred.get()
    if events is None:
        record()
    else:
        events.append(record)
