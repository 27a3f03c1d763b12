"""Reads of the audit log."""

import uuid
from datetime import datetime

from django.db.models import QuerySet

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
    events = AuditEvent.objects.filter(organization_id=organization_id)
    if action:
        if action.endswith(".*"):
            events = events.filter(action__startswith=action[:-1])
        else:
            events = events.filter(action=action)
    if actor_type:
        events = events.filter(actor_type=actor_type)
    if actor_id:
        events = events.filter(actor_id=actor_id)
    if subject_type:
        events = events.filter(subject_type=subject_type)
    if subject_id:
        events = events.filter(subject_id=subject_id)
    if since:
        events = events.filter(occurred_at__gte=since)
    if until:
        events = events.filter(occurred_at__lt=until)
    return events.order_by("-sequence")
