"""The relay: the audit log read past each organization's cursor and handed on.

Each organization's events carry a gapless sequence that commits in order (appending holds the
chain head's row lock until commit), so a cursor per organization and consumer misses nothing.
The relay locks the cursor with ``FOR UPDATE SKIP LOCKED`` (one relay per organization at a
time), writes one delivery per matching subscription and moves the cursor in the same
transaction: an event is handed on exactly when its deliveries are durably queued. A stream's
cursor moves only after its broker acknowledged the batch.
"""

import logging
import uuid
from dataclasses import dataclass, field
from functools import partial

from django.db import transaction
from django.utils import timezone
from prometheus_client import Counter

from agentidp.tenancy import platform_context, tenant_context
from compliance.models import AuditChainHead, AuditEvent
from organizations.models import SYSTEM_ORGANIZATION_ID
from webhooks.choices import (
    ORGANIZATION_NOTICES,
    PLATFORM_EVENTS,
    PUBLISHED,
    SECURITY_EVENTS,
    StreamName,
    WebhookFormat,
)
from webhooks.models import EventCursor, WebhookDelivery, WebhookSubscription
from webhooks.secevents import security_event_token
from webhooks.services import envelope, event_type_matches, outlets, webhook_options
from webhooks.streams import EventStream, StreamMessage, StreamUnavailable, configured_streams
from webhooks.wakes import deliveries_wake, relay_wake_now

logger = logging.getLogger("agentidp.webhooks")

STREAM_PUBLISHED = Counter(
    "agentidp_stream_events_total",
    "Events published to a stream, by stream and result (published, unavailable).",
    ["stream", "result"],
)


def _cursor_lock(organization_id: uuid.UUID, stream: str) -> EventCursor | None:
    """The organization's cursor for ``stream``, locked; None while another relay holds it."""
    cursors = EventCursor.objects.select_for_update(skip_locked=True).filter(
        organization_id=organization_id, stream=stream
    )
    cursor = cursors.first()
    if cursor is None:
        EventCursor.objects.bulk_create(
            [EventCursor(organization_id=organization_id, stream=stream, sequence=0)],
            ignore_conflicts=True,
        )
        cursor = cursors.first()
    return cursor


def _head(organization_id: uuid.UUID) -> int:
    head = (
        AuditChainHead.objects.filter(organization_id=organization_id)
        .values_list("sequence", flat=True)
        .first()
    )
    return int(head or 0)


@dataclass
class RelayReport:
    events: int = 0
    deliveries: int = 0
    streamed: dict[str, int] = field(default_factory=dict)
    unavailable: list[str] = field(default_factory=list)


def _has_outlets(organization_id: uuid.UUID) -> bool:
    if configured_streams() or organization_id == SYSTEM_ORGANIZATION_ID:
        return True
    known = outlets.get(organization_id)
    if known is None:
        with tenant_context(organization_id):
            known = WebhookSubscription.objects.filter(
                organization_id=organization_id, active=True
            ).exists()
        outlets.put(organization_id, known)
    return known


def relay_wake(organization_id: uuid.UUID) -> None:
    """Registered with :func:`agentidp.events.on_events_committed`: queue a relay for the
    organization if it has anywhere to send events."""
    if _has_outlets(organization_id):
        relay_wake_now(organization_id)


def relay_run(*, organization_id: uuid.UUID) -> RelayReport:
    """Hand every event past the cursors on: deliveries for matching subscriptions, then each
    configured stream. Loops until the chain head is reached (a relay that found the cursor
    locked relies on the holder's last look, made after its own commit)."""
    report = RelayReport()
    while True:
        with tenant_context(organization_id):
            events, deliveries, more = _relay_batch(organization_id)
        report.events += events
        report.deliveries += deliveries
        if not more:
            break
    for stream in configured_streams():
        try:
            report.streamed[stream.name] = stream_run(
                organization_id=organization_id, stream=stream
            )
        except StreamUnavailable as exc:
            STREAM_PUBLISHED.labels(stream=stream.name, result="unavailable").inc()
            logger.warning(
                "stream %s unavailable; events wait in the audit log: %s", stream.name, exc
            )
            report.unavailable.append(stream.name)
    if report.deliveries:
        deliveries_wake(organization_id)
    return report


def _subscriptions_for(organization_id: uuid.UUID) -> list[WebhookSubscription]:
    subscriptions = list(
        WebhookSubscription.objects.filter(organization_id=organization_id, active=True)
    )
    if organization_id == SYSTEM_ORGANIZATION_ID:
        # Deployment-wide events reach every organization's subscriptions that ask for them;
        # notices about one organization, its subscriptions only (see _addressed_to).
        with platform_context(reason="webhooks:platform-events"):
            subscriptions += [
                s
                for s in WebhookSubscription.objects.filter(active=True).exclude(
                    organization_id=organization_id
                )
                if any(
                    event_type_matches(s.event_types, e)
                    for e in PLATFORM_EVENTS | ORGANIZATION_NOTICES
                )
            ]
    return subscriptions


def _addressed_to(event: AuditEvent, subscription: WebhookSubscription) -> bool:
    """Whether an event of another organization's chain (the platform's) is for this
    subscription: a deployment-wide event, or a notice naming the subscription's
    organization."""
    if event.action in PLATFORM_EVENTS:
        return True
    named = event.data.get("organization_id") if isinstance(event.data, dict) else None
    return event.action in ORGANIZATION_NOTICES and named == str(subscription.organization_id)


def _relay_batch(organization_id: uuid.UUID) -> tuple[int, int, bool]:
    """One batch in the caller's tenant transaction: (events read, deliveries, more to do)."""
    batch = webhook_options().batch * 5
    head = _head(organization_id)
    if head == 0:
        return 0, 0, False  # no event yet (or no such organization)
    cursor = _cursor_lock(organization_id, StreamName.WEBHOOKS)
    if cursor is None or head <= cursor.sequence:
        return 0, 0, False
    subscriptions = _subscriptions_for(organization_id)
    if not subscriptions:
        cursor.sequence = head  # nobody listens: nothing to read
        cursor.save(update_fields=["sequence", "updated_at"])
        return 0, 0, False
    events = list(
        AuditEvent.objects.filter(
            organization_id=organization_id, sequence__gt=cursor.sequence
        ).order_by("sequence")[:batch]
    )
    deliveries: list[WebhookDelivery] = []
    now = timezone.now()
    for event in events:
        if event.action not in PUBLISHED or event.outcome != "success":
            continue
        body: str | None = None
        for subscription in subscriptions:
            if subscription.created_at > event.occurred_at:
                continue  # subscribed after the event
            if not event_type_matches(subscription.event_types, event.action):
                continue
            if subscription.organization_id != organization_id and not _addressed_to(
                event, subscription
            ):
                continue
            if subscription.format == WebhookFormat.SET:
                if event.action not in SECURITY_EVENTS:
                    continue  # a Shared Signals receiver hears of revocations only
                sent = security_event_token(event, audience=subscription.url).decode()
            else:
                body = body or envelope(event).decode()
                sent = body
            deliveries.append(
                WebhookDelivery(
                    organization_id=subscription.organization_id, subscription=subscription,
                    event_id=event.id, event_type=event.action, occurred_at=event.occurred_at,
                    body=sent, next_attempt_at=now,
                )
            )  # fmt: skip
    if deliveries:
        foreign = [d for d in deliveries if d.organization_id != organization_id]
        own = [d for d in deliveries if d.organization_id == organization_id]
        WebhookDelivery.objects.bulk_create(own, ignore_conflicts=True)
        if foreign:
            with platform_context(reason="webhooks:platform-events"):
                WebhookDelivery.objects.bulk_create(foreign, ignore_conflicts=True)
            for other in {d.organization_id for d in foreign}:
                transaction.on_commit(partial(deliveries_wake, other), robust=True)
    if events:
        cursor.sequence = events[-1].sequence
        cursor.save(update_fields=["sequence", "updated_at"])
    more = len(events) == batch or cursor.sequence < _head(organization_id)
    return len(events), len(deliveries), more


def stream_run(*, organization_id: uuid.UUID, stream: EventStream) -> int:
    """Publish every published event past the stream's cursor; the cursor moves only after the
    broker acknowledged the batch. Returns the number of events published."""
    published = 0
    batch = webhook_options().batch * 5
    while True:
        with tenant_context(organization_id):
            if _head(organization_id) == 0:
                return published
            cursor = _cursor_lock(organization_id, stream.name)
            if cursor is None:
                return published
            events = list(
                AuditEvent.objects.filter(
                    organization_id=organization_id, sequence__gt=cursor.sequence
                ).order_by("sequence")[:batch]
            )
            if not events:
                return published
            messages = [
                StreamMessage(
                    event_id=str(e.id), event_type=e.action,
                    organization_id=str(organization_id), body=envelope(e),
                )
                for e in events
                if e.action in PUBLISHED and e.outcome == "success"
            ]  # fmt: skip
            if messages:
                stream.publish(messages)  # raises: the transaction rolls back, cursor unmoved
            cursor.sequence = events[-1].sequence
            cursor.save(update_fields=["sequence", "updated_at"])
        STREAM_PUBLISHED.labels(stream=stream.name, result="published").inc(len(messages))
        published += len(messages)
        if len(events) < batch:
            return published
