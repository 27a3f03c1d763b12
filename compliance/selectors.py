"""Reads of the audit log."""

import uuid
from datetime import datetime

from django.db.models import QuerySet

from agentidp.queries import time_windowed, type_filtered
from compliance.models import AuditEvent


def audit_event_list(
    *,
    organization_id: uuid.UUID,
    action: str | None = None,
    actor_type: str | None = None,
    actor_id: str | None = None,
    subject_type: str | None = None,
    subject_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[AuditEvent]:
    """The organization's events, newest first, narrowed by the given filters.

    ``action`` ending in ``.*`` matches a family (``agent.*``).
    """
    events = type_filtered(
        AuditEvent.objects.filter(organization_id=organization_id), "action", action
    )
    if actor_type:
        events = events.filter(actor_type=actor_type)
    if actor_id:
        events = events.filter(actor_id=actor_id)
    if subject_type:
        events = events.filter(subject_type=subject_type)
    if subject_id:
        events = events.filter(subject_id=subject_id)
    return time_windowed(events, "occurred_at", since, until).order_by("-sequence")
