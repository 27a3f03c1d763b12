"""Choices for webhooks: the events published, delivery and attempt states, streams."""

from django.db import models


class EventType(models.TextChoices):
    """Every event published to subscriptions and streams (an audit action of the same name)."""

    AGENT_CREATED = "agent.created", "An agent was registered"
    AGENT_UPDATED = "agent.updated", "An agent's details changed"
    AGENT_SUSPENDED = "agent.suspended", "An agent was suspended"
    AGENT_REACTIVATED = "agent.reactivated", "A suspended agent was reactivated"
    AGENT_DECOMMISSIONED = "agent.decommissioned", "An agent was decommissioned"
    AGENT_TOKENS_REVOKED = "agent.tokens_revoked", "Every live token of an agent was revoked"
    AGENT_DELEGATION_UPDATED = (
        "agent.delegation_updated",
        "Who may act for an agent, with which scopes, changed",
    )
    AGENT_SPONSOR_CHANGED = "agent.sponsor_changed", "An agent's sponsor was reassigned"
    AGENT_ATTESTED = "agent.attested", "A sponsor attested that an agent is still needed"
    AGENT_ATTESTATION_DUE = (
        "agent.attestation_due",
        "An agent's attestation falls due within 7 days (its sponsor is asked to attest)",
    )
    AGENTS_KILL_SWITCH = (
        "agents.kill_switch",
        "Every active agent of a sponsor, or of the organization, was suspended at once",
    )
    CREDENTIAL_GENERATED = "credential.generated", "A client secret was generated"
    CREDENTIAL_ROTATED = "credential.rotated", "A client secret was rotated"
    CREDENTIAL_REVOKED = "credential.revoked", "A client secret was revoked"
    CREDENTIAL_SCOPES_CHANGED = "credential.scopes_changed", "An agent's allowed scopes changed"
    CREDENTIAL_KEY_ADDED = (
        "credential.key_added",
        "An agent registered a public key (private_key_jwt)",
    )
    CREDENTIAL_KEY_REMOVED = "credential.key_removed", "An agent's public key was removed"
    CREDENTIAL_CLIENT_CHANGED = "credential.client_changed", "An agent's client metadata changed"
    TOKEN_ISSUED = "token.issued", "An access token was issued"  # noqa: S105 - an event name
    TOKEN_REVOKED = "token.revoked", "An access token was revoked"  # noqa: S105 - an event name
    RESOURCE_CREATED = "resource.created", "A resource server was registered"
    RESOURCE_UPDATED = "resource.updated", "A registered resource server changed"
    RESOURCE_DELETED = "resource.deleted", "A resource server was removed from the registry"
    RESOURCE_GRANT_CHANGED = (
        "resource.grant_changed",
        "Which of a resource's scopes an agent or a role may be issued changed",
    )
    KEY_PUBLISHED = "key.published", "A signing key was published in the JWKS"
    KEY_ACTIVATED = "key.activated", "A signing key started signing"
    KEY_RETIRED = "key.retired", "A signing key stopped signing (still verifies)"
    KEY_REMOVED = "key.removed", "A retired signing key left the JWKS"
    DID_CREATED = "did.created", "An agent's DID was created"
    DID_KEY_ROTATED = "did.key_rotated", "An agent's DID key was rotated"
    DID_DEACTIVATED = "did.deactivated", "An agent's DID was deactivated"
    WEBHOOK_CREATED = "webhook.created", "A webhook subscription was created"
    WEBHOOK_UPDATED = "webhook.updated", "A webhook subscription changed"
    WEBHOOK_DELETED = "webhook.deleted", "A webhook subscription was deleted"
    WEBHOOK_SECRET_ROTATED = "webhook.secret_rotated", "A subscription's signing secret rotated"  # noqa: S105
    WEBHOOK_DISABLED = "webhook.disabled", "A subscription was disabled (410, or failing too long)"
    WEBHOOK_PING = "webhook.ping", "A test event sent to one subscription on request"
    FEDERATION_PARTNER_ADDED = "federation.partner_added", "A partner issuer became trusted"
    FEDERATION_PARTNER_UPDATED = (
        "federation.partner_updated",
        "A partner's limits or status changed",
    )
    FEDERATION_PARTNER_REMOVED = "federation.partner_removed", "A partner is no longer trusted"
    FEDERATION_RESOURCE_SHARED = (
        "federation.resource_shared",
        "A registered resource was shared with a partner, or its share changed or ended",
    )
    FEDERATION_VERIFIED = "federation.verified", "A partner's token was verified"
    FEDERATION_REJECTED = "federation.rejected", "A token presented as a partner's was refused"
    AUDIT_CHECKPOINT = "audit.checkpoint", "A checkpoint of the audit log's Merkle tree was signed"
    AUDIT_INTEGRITY_FAILED = (
        "audit.integrity_failed",
        "A verification found the audit log altered, truncated or unlike what was signed",
    )


PUBLISHED = frozenset(EventType.values) - {EventType.WEBHOOK_PING}
"""Actions relayed from the audit log; a ping goes only to the subscription it tests."""

PLATFORM_EVENTS = frozenset(
    {EventType.KEY_PUBLISHED, EventType.KEY_ACTIVATED, EventType.KEY_RETIRED, EventType.KEY_REMOVED}
)
"""Deployment-wide events (recorded on the platform's chain), delivered to every organization's
subscriptions that ask for them."""

ORGANIZATION_NOTICES = frozenset({EventType.AUDIT_INTEGRITY_FAILED})
"""Events about one organization recorded on the platform's chain, not the organization's own
(an integrity failure is not written into the log it doubts: a truncated log's relay cursor may
be past the new events, and the next verification would read them as its own findings); they
are delivered to the subscriptions of the organization their ``data.organization_id`` names."""

FAMILIES = frozenset(value.split(".", 1)[0] for value in EventType.values)


class WebhookFormat(models.TextChoices):
    """What a subscription is sent: the Standard Webhooks JSON envelope of every event it
    subscribes to, or Security Event Tokens (RFC 8417, pushed as RFC 8935 describes) with CAEP
    payloads, for the revocations among them (:data:`SECURITY_EVENTS`)."""

    STANDARD = "standard", "Standard Webhooks JSON envelope"
    SET = "set", "Security Event Tokens (RFC 8417, CAEP session-revoked) for revocations"


SECURITY_EVENTS = frozenset(
    {
        EventType.TOKEN_REVOKED, EventType.AGENT_TOKENS_REVOKED, EventType.AGENT_SUSPENDED,
        EventType.AGENT_DECOMMISSIONED, EventType.CREDENTIAL_REVOKED,
        EventType.AGENTS_KILL_SWITCH,
    }
)  # fmt: skip
"""The events a ``set`` subscription is sent: each ends access (tokens, and the trees of
tokens exchanged from them)."""


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending (first attempt or a retry is due at next_attempt_at)"
    SUCCEEDED = "succeeded", "Succeeded (2xx)"
    DEAD_LETTER = "dead_letter", "Dead letter (every attempt failed)"
    CANCELLED = "cancelled", "Cancelled (the receiver answered 410 Gone)"


class AttemptOutcome(models.TextChoices):
    SUCCESS = "success", "2xx"
    HTTP_ERROR = "http_error", "A status other than 2xx"
    GONE = "gone", "410 Gone: the subscription is disabled"
    REDIRECT = "redirect", "A redirect (never followed)"
    TIMEOUT = "timeout", "No complete answer in time"
    CONNECTION = "connection", "Could not connect, or the connection broke"
    TOO_LARGE = "too_large", "The answer exceeded the size limit"
    REFUSED = "refused", "The URL is not allowed (SSRF guard)"


class SubscriptionDisabledReason(models.TextChoices):
    GONE = "gone", "The receiver answered 410 Gone"
    FAILING = "failing", "Every delivery failed for longer than the allowed window"
    MANUAL = "manual", "Disabled by a person"


class StreamName(models.TextChoices):
    WEBHOOKS = "webhooks", "Webhook subscriptions"
    KAFKA = "kafka", "Kafka"
    NATS = "nats", "NATS JetStream"
