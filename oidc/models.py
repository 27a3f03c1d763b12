"""Signing keys and django-oauth-toolkit's swapped token models, each owned by an organization."""

import uuid

from django.conf import settings
from django.db import models
from oauth2_provider.models import AbstractAccessToken, AbstractIDToken, AbstractRefreshToken

from agentidp.models import OrgOwnedModel, TimestampedModel
from credentials.choices import SigningAlgorithm
from oidc.choices import KeyStatus, RevocationReason
from organizations.choices import MemberRole


class SigningKey(models.Model):
    """A signing key: public JWK here, private part only in the secret store.

    One lifecycle per algorithm: ``next`` (published, not signing), ``current`` (signing),
    ``retired`` (published until every token it signed has expired, then removed)."""

    kid = models.CharField(max_length=64, primary_key=True)
    algorithm = models.CharField(max_length=10, choices=SigningAlgorithm.choices)
    status = models.CharField(max_length=10, choices=KeyStatus.choices)
    public_jwk = models.JSONField()
    created_at = models.DateTimeField(
        auto_now_add=True, verbose_name="published at", help_text="In the JWKS since then."
    )
    activated_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    verify_until = models.DateTimeField(
        null=True, blank=True, help_text="A retired key stays in the JWKS until then."
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["algorithm"],
                condition=models.Q(status="current"),
                name="%(app_label)s_%(class)s_one_current",
            ),
            models.UniqueConstraint(
                fields=["algorithm"],
                condition=models.Q(status="next"),
                name="%(app_label)s_%(class)s_one_next",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kid} ({self.algorithm}, {self.status})"


class AccessToken(OrgOwnedModel, AbstractAccessToken):
    """An issued access token (a signed JWT), kept for audit, revocation and introspection.

    Only its checksum is stored, never the bearer token itself (RFC 9700 token storage)."""

    # No single-column indexes on these two: the organization's is covered by the composite
    # (organization, expires) index, and client_credentials never sets a user.
    organization = models.ForeignKey(
        "organizations.Organization",
        on_delete=models.PROTECT,
        related_name="+",
        editable=False,
        db_index=False,
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        blank=True,
        null=True,
        related_name="%(app_label)s_%(class)s",
        verbose_name="user",
        db_index=False,
    )
    jti = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    credential_id = models.UUIDField(
        null=True, blank=True, editable=False, help_text="The client secret it was issued with."
    )
    # A delegated token (token exchange): the jti of the token it was exchanged for, so the
    # delegation tree is known; null for a token issued to its agent directly.
    parent_jti = models.UUIDField(null=True, blank=True, editable=False)
    # Its index in the deployment's token status lists (oidc.status): the ``status`` claim.
    status_idx = models.BigIntegerField(null=True, blank=True, editable=False)

    class Meta(AbstractAccessToken.Meta):
        indexes = [
            models.Index(fields=["organization", "expires"], name="oidc_token_org_expires"),
            models.Index(
                fields=["parent_jti"], name="oidc_token_parent",
                condition=models.Q(parent_jti__isnull=False),
            ),
        ]  # fmt: skip


class RefreshToken(OrgOwnedModel, AbstractRefreshToken):
    """Swapped with AccessToken; client_credentials never issues one."""

    class Meta(AbstractRefreshToken.Meta):
        pass


class IDToken(OrgOwnedModel, AbstractIDToken):
    """Swapped with AccessToken, which links to it."""

    class Meta(AbstractIDToken.Meta):
        pass


class RevokedToken(OrgOwnedModel):
    """The durable record of a revoked token, kept until the token would have expired.

    The revocation list in Redis is a cache of these rows, rebuilt from them whenever Redis
    has lost it (``oidc.revocation``)."""

    jti = models.UUIDField(unique=True, editable=False)
    expires_at = models.DateTimeField(editable=False)
    revoked_at = models.DateTimeField(editable=False)
    reason = models.CharField(max_length=30, choices=RevocationReason.choices, editable=False)
    # The token's status-list index (null for a token issued before status lists): the bit
    # the status list sets while this row exists.
    status_idx = models.BigIntegerField(null=True, blank=True, editable=False)

    class Meta:
        indexes = [
            models.Index(fields=["expires_at"], name="oidc_revoked_expires"),
            models.Index(
                fields=["status_idx"], name="oidc_revoked_status",
                condition=models.Q(status_idx__isnull=False),
            ),
        ]  # fmt: skip

    def __str__(self) -> str:
        return f"{self.jti} ({self.reason})"


class AssertionUse(models.Model):
    """A signed assertion already spent (a partner's token exchanged by the JWT bearer grant or
    token exchange): its issuer and ``jti``, both hashed, kept until it expires. One use per
    issuer and ``jti`` across the whole deployment, whichever organization it was presented to.

    Deployment-wide, so not under RLS: the application role holds no privilege on the table
    and reaches it only through ``oidc_assertion_spend`` (``SECURITY DEFINER``), which answers
    whether this use is the first and reveals nothing else (:mod:`oidc.replay`)."""

    id = models.BigAutoField(primary_key=True)
    issuer_sha256 = models.CharField(max_length=64, editable=False)
    jti_sha256 = models.CharField(max_length=64, editable=False)
    expires_at = models.DateTimeField(editable=False)
    spent_at = models.DateTimeField(editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["issuer_sha256", "jti_sha256"], name="%(app_label)s_%(class)s_once"
            ),
        ]
        indexes = [models.Index(fields=["expires_at"], name="oidc_assertionuse_expires")]

    def __str__(self) -> str:
        return f"{self.issuer_sha256[:12]}/{self.jti_sha256[:12]}"


class Resource(OrgOwnedModel, TimestampedModel):
    """A resource server of the organization's (an API, an MCP server): the ``aud`` of the
    tokens issued for it, the scopes it defines, and how its tokens are made.

    The identifier is unique across the deployment: two organizations naming one server would
    let either mint tokens the other's server accepts."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    identifier = models.CharField(
        max_length=2048, unique=True,
        help_text="The resource indicator (RFC 8707) agents ask for and tokens name as aud: an "
        "absolute https URI without a fragment (http only on loopback, in development).",
    )  # fmt: skip
    name = models.CharField(max_length=200)
    # [{"name": "tools:call", "description": "..."}]: the scopes only this resource's tokens hold.
    scopes = models.JSONField(default=list, blank=True)
    access_token_lifetime = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Seconds its tokens live (empty: the organization's lifetime); never longer than "
        "the organization's lifetime.",
    )  # fmt: skip
    signing_algorithm = models.CharField(
        max_length=10, choices=SigningAlgorithm.choices, default=SigningAlgorithm.ES256
    )
    dpop_required = models.BooleanField(
        default=False, help_text="Only sender-constrained (DPoP, RFC 9449) tokens are issued."
    )
    metadata_hosted = models.BooleanField(
        default=False,
        help_text="This deployment serves the resource's RFC 9728 metadata (public, at "
        "/resources/{id}/oauth-protected-resource) for servers that do not serve their own.",
    )
    created_by = models.CharField(max_length=200, blank=True, editable=False)

    class Meta:
        ordering = ["identifier"]
        indexes = [models.Index(fields=["organization", "identifier"], name="oidc_resource_org")]

    def __str__(self) -> str:
        return f"{self.name} ({self.identifier})"

    @property
    def scope_names(self) -> list[str]:
        return [str(scope["name"]) for scope in self.scopes if isinstance(scope, dict)]


class ResourceGrant(OrgOwnedModel, TimestampedModel):
    """Which of a resource's scopes an agent, or every agent holding a role, may be issued."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    resource = models.ForeignKey(Resource, on_delete=models.CASCADE, related_name="grants")
    agent = models.ForeignKey(
        "agents.Agent", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    role = models.CharField(
        max_length=20, blank=True, choices=MemberRole.choices,
        help_text="Every agent holding this role in the organization (instead of one agent).",
    )  # fmt: skip
    scopes = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["resource", "role"]
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(agent__isnull=False) & models.Q(role=""))
                | (models.Q(agent__isnull=True) & ~models.Q(role="")),
                name="%(app_label)s_%(class)s_agent_or_role",
            ),
            models.UniqueConstraint(
                fields=["resource", "agent"],
                condition=models.Q(agent__isnull=False),
                name="%(app_label)s_%(class)s_agent_once",
            ),  # fmt: skip
            models.UniqueConstraint(
                fields=["resource", "role"],
                condition=~models.Q(role=""),
                name="%(app_label)s_%(class)s_role_once",
            ),  # fmt: skip
        ]

    def __str__(self) -> str:
        return f"{self.agent_id or self.role}: {' '.join(map(str, self.scopes))}"
