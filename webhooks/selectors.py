"""Reads of webhooks: subscriptions and deliveries of one organization, and the work that is
due across organizations (for the beat job, through the platform context)."""

import uuid
from datetime import datetime

from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from agentidp.queries import time_windowed, type_filtered
from agentidp.tenancy import platform_context
from webhooks.models import WebhookDelivery, WebhookSubscription


def subscription_list(*, organization_id: uuid.UUID) -> QuerySet[WebhookSubscription]:
    return WebhookSubscription.objects.filter(organization_id=organization_id).order_by(
        "-created_at", "id"
    )


def delivery_list(
    *,
    organization_id: uuid.UUID,
    subscription_id: uuid.UUID,
    status: str | None = None,
    event_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[WebhookDelivery]:
    """The subscription's deliveries, newest first; ``event_type`` may be a family (``agent.*``)."""
    deliveries = WebhookDelivery.objects.filter(
        organization_id=organization_id, subscription_id=subscription_id
    )
    if status:
        deliveries = deliveries.filter(status=status)
    deliveries = type_filtered(deliveries, "event_type", event_type)
    deliveries = time_windowed(deliveries, "created_at", since, until)
    return deliveries.order_by("-created_at")


RELAY_DUE_SQL = """
SELECT h.organization_id::text FROM compliance_auditchainhead h
 WHERE EXISTS (
       SELECT 1 FROM unnest(%s::text[]) AS s(name)
         LEFT JOIN webhooks_eventcursor c
                ON c.organization_id = h.organization_id AND c.stream = s.name
        WHERE COALESCE(c.sequence, 0) < h.sequence)
"""
SEND_DUE_SQL = """
SELECT DISTINCT organization_id::text FROM webhooks_webhookdelivery
 WHERE status = 'pending' AND next_attempt_at <= %s::timestamptz
"""
LAG_SQL = """
SELECT EXTRACT(EPOCH FROM %s::timestamptz - MIN(occurred_at)) FROM webhooks_webhookdelivery
 WHERE status = 'pending'
"""


def organizations_with_work(*, streams: list[str], reason: str) -> tuple[list[str], list[str]]:
    """Organizations with events past a cursor of ``streams``, and organizations with
    deliveries due now (listing them crosses tenants)."""
    with platform_context(reason=reason), connection.cursor() as cursor:
        cursor.execute(RELAY_DUE_SQL, [streams])
        relay = [str(row[0]) for row in cursor.fetchall()]
        cursor.execute(SEND_DUE_SQL, [timezone.now()])
        send = [str(row[0]) for row in cursor.fetchall()]
    return relay, send


def undelivered_age_seconds(*, reason: str) -> float:
    """Age of the oldest event still waiting for a delivery (0 when none waits)."""
    with platform_context(reason=reason), connection.cursor() as cursor:
        cursor.execute(LAG_SQL, [timezone.now()])
        row = cursor.fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0


def previous_secrets_expired(*, reason: str) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(organization, subscription) of every previous secret whose overlap has ended."""
    with platform_context(reason=reason):
        return list(
            WebhookSubscription.objects.filter(
                previous_secret_expires_at__lt=timezone.now()
            ).values_list("organization_id", "id")
        )
