"""Every write of webhooks' subscriptions and their secrets, the rules their input must meet,
and the envelope every consumer receives. The relay (:mod:`webhooks.relay`) and delivery
(:mod:`webhooks.delivery`) build on these.

The audit log is the outbox (see :mod:`agentidp.events`): nothing here writes a second row per
event. Secrets live in the secret store; the database holds only where.
"""

import base64
import json
import logging
import secrets
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import cast

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from standardwebhooks import Webhook

from agentidp.boundary import text_refusal
from agentidp.errors import Conflict, JSONValue, NotFound, ValidationFailed
from agentidp.events import event_record
from agentidp.lru import BoundedLRU
from agentidp.outbound import Limits, UrlRefused, url_check
from agentidp.principals import Principal
from agentidp.secrets import SecretNotFound, SecretStoreError, secret_store
from compliance.encryption import EncryptedColumn, decrypt, encrypt
from compliance.models import AuditEvent
from webhooks.choices import (
    FAMILIES,
    PUBLISHED,
    DeliveryStatus,
    EventType,
    SubscriptionDisabledReason,
    WebhookFormat,
)
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookSubscription
from webhooks.wakes import deliveries_wake

logger = logging.getLogger("agentidp.webhooks")

MAX_EVENT_TYPES = 50
MAX_SUBSCRIPTIONS = 100  # per organization: each one multiplies every event's deliveries
MAX_DESCRIPTION = 500
MAX_RATE_LIMIT = 10_000
SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret

SUCCESS_LEASE_MARGIN = 5.0


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


SECRET_COLUMN = EncryptedColumn("webhooks.WebhookSubscription", "secret_ref")
PREVIOUS_SECRET_COLUMN = EncryptedColumn("webhooks.WebhookSubscription", "previous_secret_ref")


def secret_path(subscription: WebhookSubscription, column: EncryptedColumn = SECRET_COLUMN) -> str:
    """Where the subscription's current (or previous) secret is in the store: the column holds
    it encrypted at rest. ``""``: none."""
    return decrypt(
        str(getattr(subscription, column.field)),
        organization_id=subscription.organization_id,
        column=column,
        row_id=subscription.id,
    )


def _sealed_path(subscription: WebhookSubscription, column: EncryptedColumn, path: str) -> str:
    return encrypt(
        path, organization_id=subscription.organization_id, column=column, row_id=subscription.id
    )


def _secret_store_write(path: str, secret: str) -> None:
    secret_store().write(path, {"value": secret})


def _secret_delete_after_commit(path: str) -> None:
    def delete() -> None:
        try:
            secret_store().delete(path)
        except SecretStoreError:
            logger.warning("could not delete a replaced webhook secret at %s", path)

    transaction.on_commit(delete, robust=True)


# Signers by secret reference (a reference never changes meaning: a new secret gets a new
# path), kept briefly so a busy subscription does not read the store per delivery.
signers: BoundedLRU[str, Webhook] = BoundedLRU(max_entries=4096, max_age=300)


def signer(path: str) -> Webhook:
    """The Standard Webhooks signer (the ``standardwebhooks`` library) for the secret at
    ``path`` in the secret store."""
    if not path:
        raise SecretNotFound("no secret reference")
    found = signers.get(path)
    if found is None:
        found = Webhook(secret_store().read(path)["value"])
        signers.put(path, found)
    return found


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
    return {
        "url": subscription.url, "event_types": types, "active": subscription.active,
        "format": subscription.format,
    }  # fmt: skip


def _format_checked(value: object) -> str:
    if value not in WebhookFormat.values:
        raise ValidationFailed(
            "Unknown format.", errors={"format": [f"One of {', '.join(WebhookFormat.values)}."]}
        )
    return str(value)


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
    format: str = WebhookFormat.STANDARD,  # noqa: A002 - the API's name for it
) -> IssuedSecret:
    """Subscribe ``url`` to ``event_types``; the secret is stored in the secret store first (a
    store that is down fails the request with nothing written)."""
    existing = WebhookSubscription.objects.filter(organization_id=organization_id).count()
    if existing >= MAX_SUBSCRIPTIONS:
        raise Conflict(
            f"The organization has {MAX_SUBSCRIPTIONS} webhook subscriptions; delete one first.",
            errors={"url": [f"At most {MAX_SUBSCRIPTIONS} subscriptions per organization."]},
        )
    subscription = WebhookSubscription(
        organization_id=organization_id,
        url=url_checked(url),
        event_types=event_types_checked(list(event_types)),
        description=_description_checked(description),
        active=bool(active),
        rate_limit=_rate_limit_checked(rate_limit),
        format=_format_checked(format),
        created_by=actor.id,
    )
    secret = _secret_new()
    path = _secret_path(organization_id, subscription.id)
    subscription.secret_ref = _sealed_path(subscription, SECRET_COLUMN, path)
    _secret_store_write(path, secret)
    subscription.save(force_insert=True)
    transaction.on_commit(partial(outlets.forget, organization_id))
    event_record(
        organization_id=organization_id,
        actor=actor,
        action=EventType.WEBHOOK_CREATED,
        subject_type="webhook",
        subject_id=str(subscription.id),
        data=_subscription_data(subscription),
    )
    return IssuedSecret(subscription=subscription, secret=secret)


SUBSCRIPTION_UPDATABLE = ("url", "event_types", "active", "description", "rate_limit", "format")


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
    if "format" in changes:
        subscription.format = _format_checked(changes["format"])
    if "active" in changes:
        if not isinstance(changes["active"], bool):
            raise ValidationFailed("Invalid active flag.", errors={"active": ["A boolean."]})
        if changes["active"] and not subscription.active:
            subscription.disabled_at, subscription.disabled_reason = None, ""
            subscription.failing_since = None
        subscription.active = changes["active"]
    subscription.save()
    transaction.on_commit(partial(outlets.forget, organization_id))
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
    refs = [
        r
        for r in (secret_path(subscription), secret_path(subscription, PREVIOUS_SECRET_COLUMN))
        if r
    ]
    # Locked before anything goes: a worker recording attempts for these deliveries waits,
    # then finds them gone (it locks the subscription first too), so no attempt slips in
    # between the two deletes to fail the commit.
    list(
        WebhookDelivery.objects.filter(
            organization_id=organization_id, subscription_id=subscription.id
        )
        .select_for_update()
        .values_list("id", flat=True)
    )
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
    current, previous = secret_path(subscription), secret_path(subscription, PREVIOUS_SECRET_COLUMN)
    secret = _secret_new()
    path = _secret_path(organization_id, subscription.id)
    _secret_store_write(path, secret)
    if previous:
        _secret_delete_after_commit(previous)
    now = timezone.now()
    if overlap:
        subscription.previous_secret_ref = _sealed_path(
            subscription, PREVIOUS_SECRET_COLUMN, current
        )
        subscription.previous_secret_expires_at = now + timedelta(seconds=overlap)
    else:
        _secret_delete_after_commit(current)
        subscription.previous_secret_ref, subscription.previous_secret_expires_at = "", None
    subscription.secret_ref = _sealed_path(subscription, SECRET_COLUMN, path)
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


# Whether an organization has anything to relay to, per process, briefly: an organization with
# no subscription and no stream is skipped without a query (its events are relayed by the next
# beat run if a subscription appears meanwhile: they wait in the audit log, nothing is lost).
outlets: BoundedLRU[uuid.UUID, bool] = BoundedLRU(max_entries=10000, max_age=5)


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
    _secret_delete_after_commit(secret_path(subscription, PREVIOUS_SECRET_COLUMN))
    subscription.previous_secret_ref, subscription.previous_secret_expires_at = "", None
    subscription.save(update_fields=["previous_secret_ref", "previous_secret_expires_at"])
    return True
