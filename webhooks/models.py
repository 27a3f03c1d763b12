"""Webhook subscriptions, their deliveries and attempts, and the relay's place in each log."""

import uuid

from django.contrib.postgres.fields import ArrayField
from django.db import models

from agentidp.models import OrgOwnedModel, TimestampedModel
from webhooks.choices import (
    AttemptOutcome,
    DeliveryStatus,
    StreamName,
    SubscriptionDisabledReason,
    WebhookFormat,
)


class WebhookSubscription(OrgOwnedModel, TimestampedModel):
    """An HTTPS endpoint that receives the organization's events of the types it names."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    url = models.CharField(max_length=2048)
    event_types = ArrayField(
        models.CharField(max_length=100),
        help_text="Event types, families like agent.*, or * for every event.",
    )
    active = models.BooleanField(default=True)
    description = models.CharField(max_length=500, blank=True, default="")
    format = models.CharField(
        max_length=10, choices=WebhookFormat.choices, default=WebhookFormat.STANDARD,
        db_default=WebhookFormat.STANDARD,
        help_text="standard: the JSON envelope of every subscribed event; set: a signed Security"
        " Event Token (RFC 8417, CAEP) for each revocation among them.",
    )  # fmt: skip
    rate_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="At most this many deliveries a second (empty: no limit)."
    )
    # Only references: the secrets themselves live in the secret store.
    # Where the signing secrets live in the secret store, encrypted at rest.
    secret_ref = models.TextField(editable=False)
    previous_secret_ref = models.TextField(blank=True, default="", editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    secret_rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_by = models.CharField(max_length=200, editable=False)
    failing_since = models.DateTimeField(null=True, blank=True, editable=False)
    disabled_at = models.DateTimeField(null=True, blank=True, editable=False)
    disabled_reason = models.CharField(
        max_length=20, choices=SubscriptionDisabledReason.choices, blank=True, default=""
    )

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(fields=["organization", "active"], name="webhooks_sub_org_active"),
        ]

    def __str__(self) -> str:
        return self.url


class WebhookDelivery(OrgOwnedModel):
    """One event for one subscription: the exact body sent on every attempt, and its state."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    subscription = models.ForeignKey(
        WebhookSubscription, on_delete=models.CASCADE, related_name="deliveries"
    )
    event_id = models.UUIDField(help_text="The audit event's id; sent as webhook-id.")
    event_type = models.CharField(max_length=100)
    occurred_at = models.DateTimeField()
    body = models.TextField(help_text="The signed JSON envelope, byte for byte.")
    status = models.CharField(
        max_length=20, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_http_status = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "event_id"], name="%(app_label)s_%(class)s_once_per_event"
            ),
        ]
        indexes = [
            models.Index(
                fields=["organization", "next_attempt_at"],
                condition=models.Q(status="pending"),
                name="webhooks_delivery_due",
            ),
            models.Index(fields=["subscription", "created_at"], name="webhooks_delivery_sub_time"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} -> {self.subscription_id}"


class WebhookAttempt(OrgOwnedModel):
    """One try at sending a delivery: what came back and how long it took."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log"
    )
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    outcome = models.CharField(max_length=20, choices=AttemptOutcome.choices)
    http_status = models.PositiveIntegerField(null=True, blank=True)
    response_excerpt = models.CharField(max_length=1024, blank=True, default="")
    error = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        ordering = ["started_at"]
        indexes = [
            models.Index(fields=["delivery", "started_at"], name="webhooks_attempt_delivery")
        ]

    def __str__(self) -> str:
        return f"#{self.number} {self.outcome}"


class EventCursor(OrgOwnedModel):
    """How far one consumer (the webhook relay, Kafka, NATS) has read the organization's audit
    chain: every event up to ``sequence`` has been handed on durably."""

    stream = models.CharField(max_length=20, choices=StreamName.choices)
    sequence = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "stream"], name="%(app_label)s_%(class)s_one_per_stream"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.stream}@{self.sequence}"
