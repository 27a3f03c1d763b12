"""An agent's OAuth client (django-oauth-toolkit's swapped Application) and its secrets."""

import uuid
from datetime import datetime

from django.contrib.postgres.fields import ArrayField
from django.db import models
from oauth2_provider.models import AbstractApplication

from agentidp.models import OrgOwnedModel
from credentials.choices import CredentialStatus, SigningAlgorithm
from credentials.records import ClientRecord


class Client(OrgOwnedModel, AbstractApplication):
    """The OAuth client of one agent; ``client_id`` is the agent's id."""

    agent = models.OneToOneField("agents.Agent", on_delete=models.CASCADE, related_name="client")
    allowed_scopes = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    # OpenID Connect client metadata (the names of OIDC Dynamic Client Registration 1.0).
    id_token_signed_response_alg = models.CharField(
        max_length=10,
        choices=SigningAlgorithm.choices,
        default=SigningAlgorithm.RS256,
        help_text="The algorithm its id_tokens are signed with.",
    )
    userinfo_signed_response_alg = models.CharField(
        max_length=10,
        choices=SigningAlgorithm.choices,
        blank=True,
        default="",
        help_text="Blank: /agent-info answers JSON. Set: a JWT signed with this algorithm.",
    )
    # RFC 9449 5.2 client metadata: every token the client is issued is DPoP-bound.
    dpop_bound_access_tokens = models.BooleanField(
        default=False,
        help_text="Refuse token requests without a DPoP proof: every token is sender-bound.",
    )

    # Set by credentials.services.client_load: what authentication reads (live secrets).
    record: ClientRecord

    def __str__(self) -> str:
        return f"{self.name or 'client'} ({str(self.client_id)[:8]}…)"


class ClientSecret(OrgOwnedModel):
    """One client secret, stored only as an HMAC-SHA256 digest under a server key; the digest
    itself is encrypted at rest (``digest_ciphertext``), and the token endpoint matches the
    keyed blind index beside it (``digest_index``: HMAC-SHA256 of the digest under a second
    server key), so authenticating decrypts nothing."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="secrets")
    prefix = models.CharField(max_length=12, help_text="The first characters, for recognition.")
    digest_index = models.CharField(max_length=64, editable=False)
    digest_ciphertext = models.TextField(editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    rotated_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["client", "revoked_at"], name="credentials_secret_live"),
        ]

    def __str__(self) -> str:
        return f"{self.prefix}…"

    def status_at(self, moment: datetime) -> CredentialStatus:
        """Revoked, expired, rotating (in its grace period) or active, at ``moment``."""
        if self.revoked_at is not None:
            return CredentialStatus.REVOKED
        if self.expires_at is not None and self.expires_at <= moment:
            return CredentialStatus.EXPIRED
        if self.rotated_at is not None:
            return CredentialStatus.ROTATING
        return CredentialStatus.ACTIVE


class AgentKey(OrgOwnedModel):
    """A public key an agent authenticates with instead of a secret (``private_key_jwt``,
    RFC 7523 2.2): a JWK kept here, or a JWKS URI fetched through the outbound guard. At most
    two per agent, so one can replace the other without a gap."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="keys")
    kid = models.CharField(max_length=200, help_text="The key id assertions name in their header.")
    algorithm = models.CharField(
        max_length=10, blank=True, help_text="The JWK's alg, if it set one."
    )
    public_jwk = models.JSONField(null=True, blank=True)
    jwks_uri = models.CharField(max_length=2048, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=200, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "kid"], name="%(app_label)s_%(class)s_kid_once"
            ),
            models.CheckConstraint(
                condition=(models.Q(public_jwk__isnull=False) & models.Q(jwks_uri=""))
                | (models.Q(public_jwk__isnull=True) & ~models.Q(jwks_uri="")),
                name="%(app_label)s_%(class)s_jwk_or_uri",
            ),
        ]

    def __str__(self) -> str:
        return self.kid
