"""Signed delivery: due deliveries claimed, sent, and their outcome recorded.

Senders claim due deliveries with ``FOR UPDATE SKIP LOCKED`` and a lease (``next_attempt_at``
moved past the longest possible attempt), so a worker killed mid-delivery leaves them to be
claimed again when the lease ends. Each attempt is signed per Standard Webhooks 1.0 and sent
through the outbound guard; a failure is retried on the schedule (or later, if the receiver
asks), the last one is a dead letter, 410 disables the subscription. Receivers deduplicate by
``webhook-id``, the audit event's id, the same on every attempt.
"""

import contextlib
import email.utils
import logging
import os
import random
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import F
from django.utils import timezone
from prometheus_client import Counter, Histogram
from redis import RedisError

from agentidp.errors import NotFound
from agentidp.outbound import OutboundResponse, outbound_request
from agentidp.principals import Principal
from agentidp.secrets import SecretStoreError
from agentidp.tenancy import tenant_context
from agentidp.usage import redis_client
from compliance.encryption import DecryptionFailed, EncryptedColumn, decrypt
from webhooks.choices import (
    AttemptOutcome,
    DeliveryStatus,
    SubscriptionDisabledReason,
    WebhookFormat,
)
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookSubscription
from webhooks.secevents import MEDIA_TYPE as SECEVENT_MEDIA_TYPE
from webhooks.services import (
    PREVIOUS_SECRET_COLUMN,
    SECRET_COLUMN,
    WebhookOptions,
    signer,
    subscription_disable,
    webhook_options,
)

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
EXCERPT_BYTES = 1024
MAX_RETRY_AFTER = 86400.0  # a receiver may ask us to wait, but not forever


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
    format: str


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
          s.secret_ref, s.previous_secret_ref, s.previous_secret_expires_at, s.rate_limit,
          s.format
"""


def _claim(organization_id: uuid.UUID, options: WebhookOptions) -> list[Claimed]:
    with tenant_context(organization_id), connection.cursor() as cursor:
        now = timezone.now()  # the application's clock decides what is due, as it set it
        cursor.execute(
            CLAIM_SQL,
            [now, options.lease.total_seconds(), str(organization_id), now, options.batch],
        )
        rows = cursor.fetchall()
        # The secret references are encrypted at rest: opened here, in the organization's
        # context; one that does not decrypt (audited) leaves the delivery unsigned, so it fails.
        return [
            Claimed(
                id=row[0], subscription_id=row[1], event_id=row[2], occurred_at=row[3],
                body=str(row[4]).encode(), attempt=int(row[5]), url=str(row[6]),
                secret_ref=_opened(organization_id, SECRET_COLUMN, row[1], row[7]),
                previous_secret_ref=_opened(organization_id, PREVIOUS_SECRET_COLUMN, row[1], row[8]),
                previous_expires_at=row[9], rate_limit=row[10], format=str(row[11]),
            )
            for row in rows
        ]  # fmt: skip


def _opened(
    organization_id: uuid.UUID, column: EncryptedColumn, subscription_id: uuid.UUID, sealed: str
) -> str:
    try:
        return decrypt(
            str(sealed), organization_id=organization_id, column=column, row_id=subscription_id
        )
    except DecryptionFailed:
        return ""


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
    message_id = str(claimed.event_id)
    refs = [claimed.secret_ref]
    if claimed.previous_secret_ref and (
        claimed.previous_expires_at is None or claimed.previous_expires_at > started_at
    ):
        refs.append(claimed.previous_secret_ref)  # the overlap: both signatures
    body = claimed.body.decode()
    try:
        signatures = [signer(ref).sign(message_id, started_at, body) for ref in refs]
    except (SecretStoreError, KeyError) as exc:
        logger.warning("webhook secret unavailable for subscription %s", claimed.subscription_id)
        failed = OutboundResponse(
            None, {}, b"", 0.0, "connection", f"secret store: {type(exc).__name__}"
        )
        return Sent(claimed, started_at, failed)
    headers = {
        # a Security Event Token is pushed as RFC 8935 says; everything else is JSON
        "Content-Type": SECEVENT_MEDIA_TYPE
        if claimed.format == WebhookFormat.SET
        else "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(started_at.timestamp())),
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


def _settle(update: WebhookDelivery, status: str, now: datetime) -> None:
    """A delivery done with: succeeded, cancelled (410) or dead-lettered."""
    update.status, update.completed_at, update.next_attempt_at = status, now, None


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
    with tenant_context(organization_id):
        results, deferred = _still_subscribed(organization_id, results, deferred)
        gone, still_failing = _write(organization_id, results, deferred, options, report, now)
    _disable_broken(organization_id, gone, still_failing, options, report, now)


def _still_subscribed(
    organization_id: uuid.UUID, results: Sequence[Sent], deferred: Sequence[Claimed]
) -> tuple[list[Sent], list[Claimed]]:
    """Lock the subscriptions these deliveries belong to (in one order, before any delivery
    row, as deleting a subscription does) and keep what is still subscribed: a subscription
    deleted while its deliveries were in flight takes them with it, attempts and all."""
    ids = {s.claimed.subscription_id for s in results} | {c.subscription_id for c in deferred}
    kept = set(
        WebhookSubscription.objects.filter(organization_id=organization_id, id__in=ids)
        .order_by("id")
        .select_for_update(no_key=True)
        .values_list("id", flat=True)
    )
    return (
        [s for s in results if s.claimed.subscription_id in kept],
        [c for c in deferred if c.subscription_id in kept],
    )


def _write(
    organization_id: uuid.UUID,
    results: Sequence[Sent],
    deferred: Sequence[Claimed],
    options: WebhookOptions,
    report: SendReport,
    now: datetime,
) -> tuple[dict[uuid.UUID, str], set[uuid.UUID]]:
    """The attempts and the deliveries' new states; the subscriptions gone (410) and those
    still failing."""
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
            _settle(update, DeliveryStatus.SUCCEEDED, now)
            DELIVERY_LATENCY.observe(max(0.0, (now - claimed.occurred_at).total_seconds()))
            succeeded_subscriptions.add(claimed.subscription_id)
            report.succeeded += 1
        elif outcome == AttemptOutcome.GONE:
            _settle(update, DeliveryStatus.CANCELLED, now)
            gone[claimed.subscription_id] = claimed.url
            report.failed += 1
        else:
            failed_subscriptions.add(claimed.subscription_id)
            report.failed += 1
            delay = _next_attempt(claimed.attempt, response, options)
            if delay is None:
                _settle(update, DeliveryStatus.DEAD_LETTER, now)
                DEAD_LETTERS.inc()
                report.dead_lettered += 1
            else:
                update.status, update.completed_at = DeliveryStatus.PENDING, None
                update.next_attempt_at = now + timedelta(seconds=delay)
        updates.append(update)
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
    return gone, still_failing


def _disable_broken(
    organization_id: uuid.UUID,
    gone: dict[uuid.UUID, str],
    still_failing: set[uuid.UUID],
    options: WebhookOptions,
    report: SendReport,
    now: datetime,
) -> None:
    system = Principal.system("webhook-delivery", organization_id=organization_id)
    for subscription_id, url in gone.items():
        with tenant_context(organization_id), contextlib.suppress(NotFound):  # deleted since
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
