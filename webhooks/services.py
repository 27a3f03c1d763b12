"""Every write of webhooks: subscriptions and their secrets, the relay from the audit log, and
signed delivery with retry, dead letter and disabling.

The audit log is the outbox (see :mod:`agentidp.events`). The relay reads each organization's
chain past its cursor (:class:`~webhooks.models.EventCursor`, locked with ``FOR UPDATE SKIP
LOCKED`` so one relay works an organization at a time), writes one delivery per matching
subscription, and moves the cursor in the same transaction: an event is handed on exactly when
its deliveries are durably queued. Senders claim due deliveries with ``FOR UPDATE SKIP
LOCKED`` and a lease (``next_attempt_at`` moved past the longest possible attempt), so a
worker killed mid-delivery leaves its deliveries to be claimed again when the lease ends.
Receivers deduplicate by ``webhook-id``, the audit event's id, the same on every attempt.
"""

import base64
import email.utils
import hashlib
import hmac
import json
import logging
import os
import random
import secrets
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import cast

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from prometheus_client import Counter, Histogram
from redis import RedisError

from agentidp.boundary import text_refusal
from agentidp.errors import JSONValue, NotFound, ValidationFailed
from agentidp.events import event_record
from agentidp.lru import BoundedLRU
from agentidp.outbound import Limits, OutboundResponse, UrlRefused, outbound_request, url_check
from agentidp.principals import Principal
from agentidp.secrets import SecretStoreError, secret_store
from agentidp.tenancy import platform_context, tenant_context
from agentidp.usage import redis_client
from compliance.models import AuditChainHead, AuditEvent
from organizations.models import SYSTEM_ORGANIZATION_ID
from webhooks.choices import (
    FAMILIES,
    PLATFORM_EVENTS,
    PUBLISHED,
    AttemptOutcome,
    DeliveryStatus,
    EventType,
    StreamName,
    SubscriptionDisabledReason,
)
from webhooks.models import EventCursor, WebhookAttempt, WebhookDelivery, WebhookSubscription
from webhooks.streams import EventStream, StreamMessage, StreamUnavailable, configured_streams
from webhooks.wakes import deliveries_wake, relay_wake_now

logger = logging.getLogger("agentidp.webhooks")

DELIVERIES = Counter(
    "agentidp_webhook_deliveries_total",
    "Webhook delivery attempts by outcome (success, http_error, gone, redirect, timeout, "
    "connection, too_large, refused).",
    ["outcome"],
)
DEAD_LETTERS = Counter(
    "agentidp_webhook_dead_letters_total",
    "Webhook deliveries that failed their last attempt and were dead-lettered.",
)
ATTEMPT_SECONDS = Histogram(
    "agentidp_webhook_attempt_seconds",
    "Duration of one webhook delivery attempt (request sent to answer read).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DELIVERY_LATENCY = Histogram(
    "agentidp_webhook_delivery_latency_seconds",
    "From the event's commit to its successful delivery.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 36000),
)
STREAM_PUBLISHED = Counter(
    "agentidp_stream_events_total",
    "Events published to a stream, by stream and result (published, unavailable).",
    ["stream", "result"],
)

MAX_EVENT_TYPES = 50
MAX_DESCRIPTION = 500
MAX_RATE_LIMIT = 10_000
EXCERPT_BYTES = 1024
SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret
SUCCESS_LEASE_MARGIN = 5.0
MAX_RETRY_AFTER = 86400.0  # a receiver may ask us to wait, but not forever


@dataclass(frozen=True)
class WebhookOptions:
    """The webhook settings (``AGENTIDP["WEBHOOK_*"]``), read when used so tests may change them."""

    retry_schedule: tuple[float, ...]
    jitter: float
    disable_after: timedelta
    limits: Limits
    secret_overlap: int
    batch: int
    concurrency: int

    @property
    def lease(self) -> timedelta:
        """How long a claimed delivery is left alone: longer than any attempt can take."""
        return timedelta(seconds=self.limits.total_seconds * 2 + SUCCESS_LEASE_MARGIN)


def webhook_options() -> WebhookOptions:
    raw: dict[str, object] = settings.AGENTIDP
    schedule = raw["WEBHOOK_RETRY_SCHEDULE"]
    return WebhookOptions(
        retry_schedule=tuple(float(str(s)) for s in cast(Iterable[object], schedule)),
        jitter=float(str(raw["WEBHOOK_RETRY_JITTER"])),
        disable_after=timedelta(seconds=int(str(raw["WEBHOOK_DISABLE_AFTER_SECONDS"]))),
        limits=Limits(
            connect_seconds=float(str(raw["WEBHOOK_CONNECT_TIMEOUT"])),
            total_seconds=float(str(raw["WEBHOOK_TIMEOUT"])),
            max_response_bytes=int(str(raw["WEBHOOK_MAX_RESPONSE_BYTES"])),
        ),
        secret_overlap=int(str(raw["WEBHOOK_SECRET_OVERLAP_SECONDS"])),
        batch=int(str(raw["WEBHOOK_BATCH"])),
        concurrency=int(str(raw["WEBHOOK_CONCURRENCY"])),
    )


# --- input rules -----------------------------------------------------------------------------


def url_checked(url: object) -> str:
    """A subscription URL the outbound guard allows now (resolved and every address checked)."""
    if not isinstance(url, str) or not url:
        raise ValidationFailed("The URL is required.", errors={"url": ["A URL is required."]})
    try:
        url_check(url)
    except UrlRefused as refused:
        logger.info("webhook URL refused: %s", refused.reason)
        raise ValidationFailed(
            "The URL is not allowed.", errors={"url": [refused.message]}
        ) from refused
    return url


def event_types_checked(event_types: object) -> list[str]:
    """Known event types, families (``agent.*``) or ``*``; each once."""
    if not isinstance(event_types, list) or not event_types or len(event_types) > MAX_EVENT_TYPES:
        raise ValidationFailed(
            "Event types must be a list.",
            errors={"event_types": [f"A list of 1 to {MAX_EVENT_TYPES} event types."]},
        )
    unknown = [
        str(t)[:100]
        for t in event_types
        if not isinstance(t, str)
        or not (t == "*" or t in PUBLISHED or (t.endswith(".*") and t[:-2] in FAMILIES))
    ]
    if unknown:
        raise ValidationFailed(
            "Unknown event types.",
            errors={"event_types": [f"Unknown event type: {t!r}." for t in unknown[:10]]},
        )
    return list(dict.fromkeys(cast(list[str], event_types)))


def _description_checked(description: object) -> str:
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise ValidationFailed(
            "Invalid description.",
            errors={"description": [f"Text of at most {MAX_DESCRIPTION} characters."]},
        )
    if text_refusal(description):
        raise ValidationFailed(
            "Invalid description.", errors={"description": ["Must not contain NUL characters."]}
        )
    return description


def _rate_limit_checked(rate_limit: object) -> int | None:
    if rate_limit is None:
        return None
    if (
        isinstance(rate_limit, bool)
        or not isinstance(rate_limit, int)
        or not 1 <= rate_limit <= MAX_RATE_LIMIT
    ):
        raise ValidationFailed(
            "Invalid rate limit.",
            errors={"rate_limit": [f"A whole number of deliveries a second, 1 to {MAX_RATE_LIMIT}."]},
        )  # fmt: skip
    return rate_limit


def event_type_matches(patterns: Iterable[str], event_type: str) -> bool:
    family = event_type.split(".", 1)[0]
    return any(p == "*" or p == event_type or p == f"{family}.*" for p in patterns)


# --- secrets ---------------------------------------------------------------------------------


def _secret_new() -> str:
    """``whsec_`` and the base64 of 32 random bytes (Standard Webhooks)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _secret_path(organization_id: uuid.UUID, subscription_id: uuid.UUID) -> str:
    return f"orgs/{organization_id}/webhooks/{subscription_id}/{uuid.uuid4().hex}"


def _secret_store_write(path: str, secret: str) -> None:
    secret_store().write(path, {"value": secret})


def _secret_delete_after_commit(path: str) -> None:
    def delete() -> None:
        try:
            secret_store().delete(path)
        except SecretStoreError:
            logger.warning("could not delete a replaced webhook secret at %s", path)

    transaction.on_commit(delete, robust=True)


# Secrets read for signing, by reference (a reference never changes meaning: a new secret gets
# a new path), kept briefly so a busy subscription does not read the store per delivery.
_secrets: BoundedLRU[str, bytes] = BoundedLRU(max_entries=4096, max_age=300)


def _secret_key(path: str) -> bytes:
    key = _secrets.get(path)
    if key is None:
        value = secret_store().read(path)["value"]
        key = base64.b64decode(value.removeprefix(SECRET_PREFIX))
        _secrets.put(path, key)
    return key


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """One Standard Webhooks signature: ``v1,<base64 HMAC-SHA256 of id.timestamp.body>``."""
    signed = b"%s.%d.%s" % (message_id.encode(), timestamp, body)
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


# --- subscriptions ---------------------------------------------------------------------------


def subscription_get(
    *, organization_id: uuid.UUID, subscription_id: uuid.UUID, for_update: bool = False
) -> WebhookSubscription:
    """The organization's subscription; another organization's is the same 404."""
    subscriptions = WebhookSubscription.objects.filter(
        organization_id=organization_id, id=subscription_id
    )
    if for_update:
        subscriptions = subscriptions.select_for_update()
    subscription = subscriptions.first()
    if subscription is None:
        raise NotFound("No such webhook subscription.")
    return subscription


def _subscription_data(subscription: WebhookSubscription) -> dict[str, JSONValue]:
    types: list[JSONValue] = [str(t) for t in subscription.event_types]
    return {"url": subscription.url, "event_types": types, "active": subscription.active}


@dataclass(frozen=True)
class IssuedSecret:
    """A subscription and its new signing secret, shown this once."""

    subscription: WebhookSubscription
    secret: str


@transaction.atomic
def subscription_create(
    *,
    actor: Principal,
    organization_id: uuid.UUID,
    url: str,
    event_types: Sequence[str],
    description: str = "",
    active: bool = True,
    rate_limit: int | None = None,
) -> IssuedSecret:
    """Subscribe ``url`` to ``event_types``; the secret is stored in the secret store first (a
    store that is down fails the request with nothing written)."""
    subscription = WebhookSubscription(
        organization_id=organization_id,
        url=url_checked(url),
        event_types=event_types_checked(list(event_types)),
        description=_description_checked(description),
        active=bool(active),
        rate_limit=_rate_limit_checked(rate_limit),
        created_by=actor.id,
    )
    secret = _secret_new()
    subscription.secret_ref = _secret_path(organization_id, subscription.id)
    _secret_store_write(subscription.secret_ref, secret)
    subscription.save(force_insert=True)
    transaction.on_commit(partial(_outlets.forget, organization_id))
    event_record(
        organization_id=organization_id,
        actor=actor,
        action=EventType.WEBHOOK_CREATED,
        subject_type="webhook",
        subject_id=str(subscription.id),
        data=_subscription_data(subscription),
    )
    return IssuedSecret(subscription=subscription, secret=secret)


SUBSCRIPTION_UPDATABLE = ("url", "event_types", "active", "description", "rate_limit")


@transaction.atomic
def subscription_update(
    *,
    actor: Principal,
    organization_id: uuid.UUID,
    subscription_id: uuid.UUID,
    changes: Mapping[str, JSONValue],
) -> WebhookSubscription:
    """Change the URL, event types, active flag, description or rate limit; re-activating a
    disabled subscription clears why it was disabled."""
    unknown = sorted(set(changes) - set(SUBSCRIPTION_UPDATABLE))
    if unknown:
        raise ValidationFailed("Unknown fields.", errors={n: ["Unknown field."] for n in unknown})
    subscription = subscription_get(
        organization_id=organization_id, subscription_id=subscription_id, for_update=True
    )
    if "url" in changes:
        subscription.url = url_checked(changes["url"])
    if "event_types" in changes:
        subscription.event_types = event_types_checked(changes["event_types"])
    if "description" in changes:
        subscription.description = _description_checked(changes["description"])
    if "rate_limit" in changes:
        subscription.rate_limit = _rate_limit_checked(changes["rate_limit"])
    if "active" in changes:
        if not isinstance(changes["active"], bool):
            raise ValidationFailed("Invalid active flag.", errors={"active": ["A boolean."]})
        if changes["active"] and not subscription.active:
            subscription.disabled_at, subscription.disabled_reason = None, ""
            subscription.failing_since = None
        subscription.active = changes["active"]
    subscription.save()
    transaction.on_commit(partial(_outlets.forget, organization_id))
    changed: list[JSONValue] = [str(name) for name in sorted(changes)]
    event_record(
        organization_id=organization_id,
        actor=actor,
        action=EventType.WEBHOOK_UPDATED,
        subject_type="webhook",
        subject_id=str(subscription.id),
        data={**_subscription_data(subscription), "changed": changed},
    )
    return subscription


@transaction.atomic
def subscription_delete(
    *, actor: Principal, organization_id: uuid.UUID, subscription_id: uuid.UUID
) -> None:
    """Delete the subscription with its deliveries; its secrets leave the store after commit."""
    subscription = subscription_get(
        organization_id=organization_id, subscription_id=subscription_id, for_update=True
    )
    refs = [r for r in (subscription.secret_ref, subscription.previous_secret_ref) if r]
    WebhookAttempt.objects.filter(
        organization_id=organization_id, delivery__subscription_id=subscription.id
    ).delete()
    WebhookDelivery.objects.filter(
        organization_id=organization_id, subscription_id=subscription.id
    ).delete()
    subscription.delete()
    event_record(
        organization_id=organization_id,
        actor=actor,
        action=EventType.WEBHOOK_DELETED,
        subject_type="webhook",
        subject_id=str(subscription_id),
        data={"url": subscription.url},
    )
    for ref in refs:
        _secret_delete_after_commit(ref)


@transaction.atomic
def subscription_secret_rotate(
    *,
    actor: Principal,
    organization_id: uuid.UUID,
    subscription_id: uuid.UUID,
    overlap_seconds: int | None = None,
) -> IssuedSecret:
    """A new signing secret; the current one keeps signing beside it (both signatures in every
    ``webhook-signature``) for ``overlap_seconds``, so receivers can switch without a gap."""
    options = webhook_options()
    overlap = options.secret_overlap if overlap_seconds is None else overlap_seconds
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap <= 7 * 86400:
        raise ValidationFailed(
            "Invalid overlap.", errors={"overlap_seconds": ["0 to 604800 seconds."]}
        )
    subscription = subscription_get(
        organization_id=organization_id, subscription_id=subscription_id, for_update=True
    )
    secret = _secret_new()
    path = _secret_path(organization_id, subscription.id)
    _secret_store_write(path, secret)
    if subscription.previous_secret_ref:
        _secret_delete_after_commit(subscription.previous_secret_ref)
    now = timezone.now()
    if overlap:
        subscription.previous_secret_ref = subscription.secret_ref
        subscription.previous_secret_expires_at = now + timedelta(seconds=overlap)
    else:
        _secret_delete_after_commit(subscription.secret_ref)
        subscription.previous_secret_ref, subscription.previous_secret_expires_at = "", None
    subscription.secret_ref = path
    subscription.secret_rotated_at = now
    subscription.save()
    event_record(
        organization_id=organization_id,
        actor=actor,
        action=EventType.WEBHOOK_SECRET_ROTATED,
        subject_type="webhook",
        subject_id=str(subscription.id),
        data={"overlap_seconds": overlap},
    )
    return IssuedSecret(subscription=subscription, secret=secret)


@transaction.atomic
def subscription_disable(
    *,
    actor: Principal,
    organization_id: uuid.UUID,
    subscription_id: uuid.UUID,
    reason: str = SubscriptionDisabledReason.MANUAL,
    detail: str = "",
) -> WebhookSubscription:
    """Stop delivering to the subscription (its pending deliveries wait); records
    ``webhook.disabled``, itself an event other subscriptions may receive."""
    subscription = subscription_get(
        organization_id=organization_id, subscription_id=subscription_id, for_update=True
    )
    if not subscription.active:
        return subscription
    subscription.active = False
    subscription.disabled_at = timezone.now()
    subscription.disabled_reason = reason
    subscription.save()
    event_record(
        organization_id=organization_id,
        actor=actor,
        action=EventType.WEBHOOK_DISABLED,
        subject_type="webhook",
        subject_id=str(subscription.id),
        data={"url": subscription.url, "reason": reason, "detail": detail[:200]},
    )
    return subscription


@transaction.atomic
def subscription_test(
    *, actor: Principal, organization_id: uuid.UUID, subscription_id: uuid.UUID
) -> WebhookDelivery:
    """Send a ``webhook.ping`` event to this one subscription (and no other)."""
    subscription = subscription_get(
        organization_id=organization_id, subscription_id=subscription_id
    )
    event = event_record(
        organization_id=organization_id,
        actor=actor,
        action=EventType.WEBHOOK_PING,
        subject_type="webhook",
        subject_id=str(subscription.id),
        data={"url": subscription.url},
    )
    delivery = WebhookDelivery.objects.create(
        organization_id=organization_id,
        subscription=subscription,
        event_id=event.id,
        event_type=event.action,
        occurred_at=event.occurred_at,
        body=envelope(event).decode(),
        next_attempt_at=timezone.now(),
    )
    transaction.on_commit(lambda: deliveries_wake(organization_id), robust=True)
    return delivery


def delivery_get(
    *, organization_id: uuid.UUID, subscription_id: uuid.UUID, delivery_id: uuid.UUID
) -> WebhookDelivery:
    delivery = WebhookDelivery.objects.filter(
        organization_id=organization_id, subscription_id=subscription_id, id=delivery_id
    ).first()
    if delivery is None:
        raise NotFound("No such delivery.")
    return delivery


@transaction.atomic
def delivery_redeliver(
    *,
    actor: Principal,
    organization_id: uuid.UUID,
    subscription_id: uuid.UUID,
    delivery_id: uuid.UUID,
) -> WebhookDelivery:
    """Send the delivery again now, with a fresh retry schedule (the same body and webhook-id,
    so a receiver that already has it can tell)."""
    subscription_get(organization_id=organization_id, subscription_id=subscription_id)
    delivery = (
        WebhookDelivery.objects.select_for_update()
        .filter(organization_id=organization_id, subscription_id=subscription_id, id=delivery_id)
        .first()
    )
    if delivery is None:
        raise NotFound("No such delivery.")
    delivery.status = DeliveryStatus.PENDING
    delivery.attempts = 0
    delivery.next_attempt_at = timezone.now()
    delivery.completed_at = None
    delivery.save()
    event_record(
        organization_id=organization_id,
        actor=actor,
        action="webhook.redelivered",
        subject_type="webhook_delivery",
        subject_id=str(delivery.id),
        data={"event_id": str(delivery.event_id), "event_type": delivery.event_type},
    )
    transaction.on_commit(lambda: deliveries_wake(organization_id), robust=True)
    return delivery


# --- envelopes -------------------------------------------------------------------------------


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def envelope(event: AuditEvent) -> bytes:
    """``{id, type, timestamp, organization_id, data}``: the same bytes on every attempt and
    every stream. ``data`` is the audit event's data with its subject and actor."""
    data: dict[str, JSONValue] = dict(event.data)
    data["subject"] = {"type": event.subject_type, "id": event.subject_id}
    data["actor"] = {"type": event.actor_type, "id": event.actor_id}
    document = {
        "id": str(event.id),
        "type": event.action,
        "timestamp": _timestamp(event.occurred_at),
        "organization_id": str(event.organization_id),
        "data": data,
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


# --- the relay -------------------------------------------------------------------------------


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


# Whether an organization has anything to relay to, per process, briefly: an organization with
# no subscription and no stream is skipped without a query (its events are relayed by the next
# beat run if a subscription appears meanwhile: they wait in the audit log, nothing is lost).
_outlets: BoundedLRU[uuid.UUID, bool] = BoundedLRU(max_entries=10000, max_age=5)


def _has_outlets(organization_id: uuid.UUID) -> bool:
    if configured_streams() or organization_id == SYSTEM_ORGANIZATION_ID:
        return True
    known = _outlets.get(organization_id)
    if known is None:
        with tenant_context(organization_id):
            known = WebhookSubscription.objects.filter(
                organization_id=organization_id, active=True
            ).exists()
        _outlets.put(organization_id, known)
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
        # Deployment-wide events reach every organization's subscriptions that ask for them.
        with platform_context(reason="webhooks:platform-events"):
            subscriptions += [
                s
                for s in WebhookSubscription.objects.filter(active=True).exclude(
                    organization_id=organization_id
                )
                if any(event_type_matches(s.event_types, e) for e in PLATFORM_EVENTS)
            ]
    return subscriptions


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
            if (
                subscription.organization_id != organization_id
                and event.action not in PLATFORM_EVENTS
            ):
                continue
            body = body or envelope(event).decode()
            deliveries.append(
                WebhookDelivery(
                    organization_id=subscription.organization_id, subscription=subscription,
                    event_id=event.id, event_type=event.action, occurred_at=event.occurred_at,
                    body=body, next_attempt_at=now,
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


# --- delivery --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    """A delivery claimed for one attempt, with what sending it needs."""

    id: uuid.UUID
    subscription_id: uuid.UUID
    event_id: uuid.UUID
    occurred_at: datetime
    body: bytes
    attempt: int
    url: str
    secret_ref: str
    previous_secret_ref: str
    previous_expires_at: datetime | None
    rate_limit: int | None


CLAIM_SQL = """
UPDATE webhooks_webhookdelivery d
   SET attempts = d.attempts + 1, next_attempt_at = %s::timestamptz + %s * interval '1 second'
  FROM webhooks_webhooksubscription s
 WHERE d.id IN (
        SELECT dd.id FROM webhooks_webhookdelivery dd
          JOIN webhooks_webhooksubscription ss ON ss.id = dd.subscription_id
         WHERE dd.organization_id = %s AND dd.status = 'pending' AND dd.next_attempt_at <= %s::timestamptz
           AND ss.active
         ORDER BY dd.next_attempt_at
         LIMIT %s
           FOR UPDATE OF dd SKIP LOCKED)
   AND s.id = d.subscription_id
RETURNING d.id, d.subscription_id, d.event_id, d.occurred_at, d.body, d.attempts, s.url,
          s.secret_ref, s.previous_secret_ref, s.previous_secret_expires_at, s.rate_limit
"""


def _claim(organization_id: uuid.UUID, options: WebhookOptions) -> list[Claimed]:
    with tenant_context(organization_id), connection.cursor() as cursor:
        now = timezone.now()  # the application's clock decides what is due, as it set it
        cursor.execute(
            CLAIM_SQL,
            [now, options.lease.total_seconds(), str(organization_id), now, options.batch],
        )
        rows = cursor.fetchall()
    return [
        Claimed(
            id=row[0], subscription_id=row[1], event_id=row[2], occurred_at=row[3],
            body=str(row[4]).encode(), attempt=int(row[5]), url=str(row[6]),
            secret_ref=str(row[7]), previous_secret_ref=str(row[8]), previous_expires_at=row[9],
            rate_limit=row[10],
        )
        for row in rows
    ]  # fmt: skip


def _rate_allowance(subscription_id: uuid.UUID, limit: int, wanted: int) -> int:
    """How many of ``wanted`` deliveries this second's budget still allows (shared by every
    worker through Redis; all of them when Redis cannot say)."""
    key = f"agentidp:webhooks:rate:{subscription_id}:{int(timezone.now().timestamp())}"
    try:
        pipe = redis_client().pipeline(transaction=False)
        pipe.incrby(key, wanted)
        pipe.expire(key, 2)
        total = int(pipe.execute()[0])
    except RedisError:
        return wanted
    return max(0, min(wanted, limit - (total - wanted)))


@dataclass(frozen=True)
class Sent:
    claimed: Claimed
    started_at: datetime
    response: OutboundResponse


def _send_one(claimed: Claimed, options: WebhookOptions) -> Sent:
    started_at = timezone.now()
    timestamp = int(started_at.timestamp())
    message_id = str(claimed.event_id)
    try:
        signatures = [
            signature(_secret_key(claimed.secret_ref), message_id, timestamp, claimed.body)
        ]
        if claimed.previous_secret_ref and (
            claimed.previous_expires_at is None or claimed.previous_expires_at > started_at
        ):
            previous = _secret_key(claimed.previous_secret_ref)
            signatures.append(signature(previous, message_id, timestamp, claimed.body))
    except (SecretStoreError, KeyError) as exc:
        logger.warning("webhook secret unavailable for subscription %s", claimed.subscription_id)
        failed = OutboundResponse(
            None, {}, b"", 0.0, "connection", f"secret store: {type(exc).__name__}"
        )
        return Sent(claimed, started_at, failed)
    headers = {
        "Content-Type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signatures),
    }
    response = outbound_request(
        "POST", claimed.url, body=claimed.body, headers=headers, limits=options.limits
    )
    return Sent(claimed, started_at, response)


_executor: ThreadPoolExecutor | None = None
_executor_pid = 0


def _pool(options: WebhookOptions) -> ThreadPoolExecutor:
    global _executor, _executor_pid  # one pool per process, made after a fork
    if _executor is None or _executor_pid != os.getpid():
        _executor = ThreadPoolExecutor(
            max_workers=options.concurrency, thread_name_prefix="webhook"
        )
        _executor_pid = os.getpid()
    return _executor


def _retry_after(response: OutboundResponse) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, (moment - timezone.now()).total_seconds())


def _outcome(response: OutboundResponse) -> str:
    if response.error:
        return {
            "timeout": AttemptOutcome.TIMEOUT,
            "too_large": AttemptOutcome.TOO_LARGE,
            "refused": AttemptOutcome.REFUSED,
        }.get(response.error, AttemptOutcome.CONNECTION)
    status = response.status or 0
    if 200 <= status < 300:
        return AttemptOutcome.SUCCESS
    if status == 410:
        return AttemptOutcome.GONE
    if 300 <= status < 400:
        return AttemptOutcome.REDIRECT
    return AttemptOutcome.HTTP_ERROR


def _excerpt(body: bytes) -> str:
    text = body[:EXCERPT_BYTES].decode("utf-8", errors="replace")
    return text.replace("\x00", "\ufffd")[:EXCERPT_BYTES]


@dataclass
class SendReport:
    attempted: int = 0
    succeeded: int = 0
    failed: int = 0
    dead_lettered: int = 0
    disabled: list[uuid.UUID] = field(default_factory=list)


def deliveries_send(*, organization_id: uuid.UUID, max_rounds: int = 50) -> SendReport:
    """Claim the organization's due deliveries and send them, a batch at a time, until none
    is due (or ``max_rounds`` batches: the next wake or beat run continues)."""
    options = webhook_options()
    report = SendReport()
    for _ in range(max_rounds):
        claimed = _claim(organization_id, options)
        if not claimed:
            break
        claimed, deferred = _within_rate_limits(claimed)
        results = list(_pool(options).map(lambda c: _send_one(c, options), claimed))
        _record(organization_id, results, deferred, options, report)
    return report


def _within_rate_limits(claimed: list[Claimed]) -> tuple[list[Claimed], list[Claimed]]:
    by_subscription: dict[uuid.UUID, list[Claimed]] = {}
    for item in claimed:
        by_subscription.setdefault(item.subscription_id, []).append(item)
    allowed: list[Claimed] = []
    deferred: list[Claimed] = []
    for subscription_id, items in by_subscription.items():
        limit = items[0].rate_limit
        count = len(items) if limit is None else _rate_allowance(subscription_id, limit, len(items))
        allowed += items[:count]
        deferred += items[count:]
    return allowed, deferred


def _next_attempt(
    attempt: int, response: OutboundResponse, options: WebhookOptions
) -> float | None:
    """Seconds until the next attempt after failed attempt number ``attempt``; None: no more."""
    if attempt > len(options.retry_schedule):
        return None
    delay = options.retry_schedule[attempt - 1]
    delay *= 1 + random.uniform(-options.jitter, options.jitter)  # noqa: S311 - jitter, not secrecy
    asked = _retry_after(response)
    if asked is not None:
        delay = max(delay, min(asked, MAX_RETRY_AFTER))
    return delay


def _record(
    organization_id: uuid.UUID,
    results: Sequence[Sent],
    deferred: Sequence[Claimed],
    options: WebhookOptions,
    report: SendReport,
) -> None:
    """Write every attempt and each delivery's new state in one transaction; then update the
    subscriptions' failure windows, disabling those gone (410) or failing too long."""
    now = timezone.now()
    attempts: list[WebhookAttempt] = []
    updates: list[WebhookDelivery] = []
    succeeded_subscriptions: set[uuid.UUID] = set()
    failed_subscriptions: set[uuid.UUID] = set()
    gone: dict[uuid.UUID, str] = {}
    for sent in results:
        claimed, response = sent.claimed, sent.response
        outcome = _outcome(response)
        DELIVERIES.labels(outcome=outcome).inc()
        ATTEMPT_SECONDS.observe(response.seconds)
        attempts.append(
            WebhookAttempt(
                organization_id=organization_id, delivery_id=claimed.id, number=claimed.attempt,
                started_at=sent.started_at, duration_ms=int(response.seconds * 1000),
                outcome=outcome, http_status=response.status,
                response_excerpt=_excerpt(response.body), error=response.detail[:200],
            )
        )  # fmt: skip
        update = WebhookDelivery(
            id=claimed.id, last_http_status=response.status,
            last_error=(response.detail or response.error or ("" if outcome == AttemptOutcome.SUCCESS else outcome))[:200],
        )  # fmt: skip
        report.attempted += 1
        if outcome == AttemptOutcome.SUCCESS:
            update.status, update.completed_at, update.next_attempt_at = (
                DeliveryStatus.SUCCEEDED,
                now,
                None,
            )
            DELIVERY_LATENCY.observe(max(0.0, (now - claimed.occurred_at).total_seconds()))
            succeeded_subscriptions.add(claimed.subscription_id)
            report.succeeded += 1
        elif outcome == AttemptOutcome.GONE:
            update.status, update.completed_at, update.next_attempt_at = (
                DeliveryStatus.CANCELLED,
                now,
                None,
            )
            gone[claimed.subscription_id] = claimed.url
            report.failed += 1
        else:
            failed_subscriptions.add(claimed.subscription_id)
            report.failed += 1
            delay = _next_attempt(claimed.attempt, response, options)
            if delay is None:
                update.status, update.completed_at, update.next_attempt_at = (
                    DeliveryStatus.DEAD_LETTER,
                    now,
                    None,
                )
                DEAD_LETTERS.inc()
                report.dead_lettered += 1
            else:
                update.status, update.completed_at = DeliveryStatus.PENDING, None
                update.next_attempt_at = now + timedelta(seconds=delay)
        updates.append(update)
    with tenant_context(organization_id):
        WebhookAttempt.objects.bulk_create(attempts)
        fields = ["status", "completed_at", "next_attempt_at", "last_http_status", "last_error"]
        WebhookDelivery.objects.filter(organization_id=organization_id).bulk_update(updates, fields)
        if deferred:  # over the rate limit: not an attempt; due again next second
            ids = [c.id for c in deferred]
            WebhookDelivery.objects.filter(organization_id=organization_id, id__in=ids).update(
                attempts=F("attempts") - 1, next_attempt_at=now + timedelta(seconds=1)
            )
        if succeeded_subscriptions:
            WebhookSubscription.objects.filter(
                organization_id=organization_id, id__in=succeeded_subscriptions,
                failing_since__isnull=False,
            ).update(failing_since=None)  # fmt: skip
        still_failing = failed_subscriptions - succeeded_subscriptions
        if still_failing:
            WebhookSubscription.objects.filter(
                organization_id=organization_id, id__in=still_failing, failing_since__isnull=True
            ).update(failing_since=now)
    system = Principal.system("webhook-delivery", organization_id=organization_id)
    for subscription_id, url in gone.items():
        with tenant_context(organization_id):
            subscription_disable(
                actor=system, organization_id=organization_id, subscription_id=subscription_id,
                reason=SubscriptionDisabledReason.GONE, detail=f"{url} answered 410 Gone",
            )  # fmt: skip
        report.disabled.append(subscription_id)
    if still_failing:
        with tenant_context(organization_id):
            too_long = WebhookSubscription.objects.filter(
                organization_id=organization_id, id__in=still_failing, active=True,
                failing_since__lt=now - options.disable_after,
            ).values_list("id", flat=True)  # fmt: skip
            for subscription_id in list(too_long):
                subscription_disable(
                    actor=system, organization_id=organization_id,
                    subscription_id=subscription_id, reason=SubscriptionDisabledReason.FAILING,
                    detail=f"every delivery failed for over {options.disable_after}",
                )  # fmt: skip
                report.disabled.append(subscription_id)


@transaction.atomic
def subscription_previous_secret_expire(
    *, organization_id: uuid.UUID, subscription_id: uuid.UUID
) -> bool:
    """Forget a previous secret whose overlap has ended (it leaves the store after commit)."""
    subscription = subscription_get(
        organization_id=organization_id, subscription_id=subscription_id, for_update=True
    )
    expires = subscription.previous_secret_expires_at
    if not subscription.previous_secret_ref or (expires and expires > timezone.now()):
        return False
    _secret_delete_after_commit(subscription.previous_secret_ref)
    subscription.previous_secret_ref, subscription.previous_secret_expires_at = "", None
    subscription.save(update_fields=["previous_secret_ref", "previous_secret_expires_at"])
    return True
