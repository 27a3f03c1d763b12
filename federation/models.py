"""Partners an organization trusts (the assertions already exchanged: ``oidc.replay``)."""

import datetime as dt
import uuid

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone

from agentidp.conf import agentidp_settings
from agentidp.models import OrgOwnedModel, TimestampedModel
from federation.choices import KeysFetchResult, PartnerStatus


class FederationPartner(OrgOwnedModel, TimestampedModel):
    """Another issuer (an AgentIdP deployment or any OAuth/OIDC issuer) whose tokens this
    organization accepts, within limits on organizations and scopes, until it expires."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    issuer = models.CharField(max_length=2048)
    jwks_uri = models.CharField(max_length=2048)
    did = models.CharField(
        max_length=2048, blank=True, default="", help_text="The partner's did:web, if it has one."
    )
    allowed_organizations = ArrayField(
        models.CharField(max_length=200),
        default=list,
        blank=True,
        help_text="The partner's organization_id values accepted (empty: all).",
    )
    allowed_scopes = ArrayField(
        models.CharField(max_length=100),
        default=list,
        blank=True,
        help_text="The most a federated principal may be granted here.",
    )
    read_only = models.BooleanField(
        default=True, help_text="Federated principals may only read (GET) the API."
    )
    status = models.CharField(
        max_length=20, choices=PartnerStatus.choices, default=PartnerStatus.ACTIVE
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    jwks_uri_other_host = models.BooleanField(
        default=False, help_text="The jwks_uri may be on another host than the issuer."
    )
    allow_delegation = models.BooleanField(
        default=False,
        help_text="Only for this deployment's own issuer (its other organizations): their "
        "agents may act for this organization's agents through token exchange, where an "
        "agent's delegation policy names them.",
    )
    created_by = models.CharField(max_length=200, editable=False)
    notes = models.TextField(blank=True, default="", max_length=2000)
    # The partner's metadata and public keys as last fetched (public material only).
    metadata = models.JSONField(default=dict, editable=False)
    jwks = models.JSONField(default=dict, editable=False)
    keys_fetched_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_fetch_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_fetch_result = models.CharField(
        max_length=20, choices=KeysFetchResult.choices, blank=True, default="", editable=False
    )
    last_fetch_error = models.CharField(max_length=300, blank=True, default="", editable=False)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "issuer"], name="%(app_label)s_%(class)s_issuer_once"
            ),
        ]

    def __str__(self) -> str:
        return self.issuer

    @property
    def is_local(self) -> bool:
        """Whether the partner is this deployment itself: its other organizations."""
        return self.issuer == agentidp_settings().issuer

    def effective_status(self, now: dt.datetime | None = None) -> str:
        """``expired`` once ``expires_at`` has passed, whatever is stored."""
        moment = now or timezone.now()
        if self.status == PartnerStatus.SUSPENDED:
            return PartnerStatus.SUSPENDED
        if self.status == PartnerStatus.EXPIRED or (
            self.expires_at is not None and self.expires_at <= moment
        ):
            return PartnerStatus.EXPIRED
        return PartnerStatus.ACTIVE


class PartnerResource(OrgOwnedModel, TimestampedModel):
    """One of the organization's registered resources shared with a partner: the partner's
    agents may exchange their tokens (RFC 7523, RFC 8693 at the token endpoint) for a token
    naming it, with at most these of its scopes."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    partner = models.ForeignKey(
        FederationPartner, on_delete=models.CASCADE, related_name="shared_resources"
    )
    resource = models.ForeignKey(
        "oidc.Resource", on_delete=models.CASCADE, related_name="partner_shares"
    )
    scopes = ArrayField(models.CharField(max_length=100), default=list)
    created_by = models.CharField(max_length=200, editable=False)

    class Meta:
        db_table = "federation_partner_resource"
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["partner", "resource"], name="federation_partner_resource_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.resource_id} for {self.partner_id}"
