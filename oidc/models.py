"""Signing keys and django-oauth-toolkit's swapped token models, each owned by an organization."""

import uuid

from django.db import models
from oauth2_provider.models import AbstractAccessToken, AbstractIDToken, AbstractRefreshToken

from agentidp.models import OrgOwnedModel
from oidc.choices import KeyStatus, RevocationReason, SigningAlgorithm


class SigningKey(models.Model):
    """A token signing key: public JWK here, private part only in the secret store."""

    kid = models.CharField(max_length=64, primary_key=True)
    algorithm = models.CharField(max_length=10, choices=SigningAlgorithm.choices)
    status = models.CharField(max_length=10, choices=KeyStatus.choices)
    public_jwk = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    verify_until = models.DateTimeField(
        null=True, blank=True, help_text="A retired key stays in the JWKS until then."
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["status"],
                condition=models.Q(status="current"),
                name="%(app_label)s_%(class)s_one_current",
            ),
            models.UniqueConstraint(
                fields=["status"],
                condition=models.Q(status="next"),
                name="%(app_label)s_%(class)s_one_next",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kid} ({self.status})"


class AccessTokenQuerySet(models.QuerySet["AccessToken"]):
    def get(self, *args: object, **kwargs: object) -> "AccessToken":
        """django-oauth-toolkit's token view re-reads the token it has just issued by checksum
        (``objects.get(token_checksum=...)``) to send ``app_authorized``. The request that wrote
        that row in its own open transaction answers from it instead of another round trip."""
        if not args and kwargs.keys() == {"token_checksum"} and not self.query.where:
            from oidc.tokens import issued_in_this_request

            issued = issued_in_this_request(str(kwargs["token_checksum"]))
            if issued is not None:
                return issued
        return super().get(*args, **kwargs)


class AccessToken(OrgOwnedModel, AbstractAccessToken):
    """An issued access token (a signed JWT), kept for audit, revocation and introspection.

    Only its checksum is stored, never the bearer token itself (RFC 9700 token storage)."""

    jti = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    credential_id = models.UUIDField(
        null=True, blank=True, editable=False, help_text="The client secret it was issued with."
    )

    objects = AccessTokenQuerySet.as_manager()

    class Meta(AbstractAccessToken.Meta):
        indexes = [models.Index(fields=["organization", "expires"], name="oidc_token_org_expires")]


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

    class Meta:
        indexes = [models.Index(fields=["expires_at"], name="oidc_revoked_expires")]

    def __str__(self) -> str:
        return f"{self.jti} ({self.reason})"
