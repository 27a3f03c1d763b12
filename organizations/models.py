"""Organizations (the tenants) and the staff users tied to them."""

import uuid

from django.conf import settings
from django.db import models

from agentidp.models import TimestampedModel
from organizations.choices import DidKeyAlgorithm, MemberRole, OrganizationStatus, Plan

SYSTEM_ORGANIZATION_ID = uuid.UUID("00000000-0000-0000-0000-000000000001")


class Organization(TimestampedModel):
    """A tenant: owns agents, credentials, audit events; its row is visible only inside itself."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    slug = models.SlugField(max_length=63, unique=True)
    name = models.CharField(max_length=200)
    plan = models.CharField(max_length=20, choices=Plan.choices, default=Plan.FREE)
    max_agents = models.PositiveIntegerField()
    max_tokens_per_month = models.PositiveBigIntegerField()
    status = models.CharField(
        max_length=20, choices=OrganizationStatus.choices, default=OrganizationStatus.ACTIVE
    )
    access_token_lifetime_seconds = models.PositiveIntegerField(
        default=600, help_text="Lifetime of access tokens; capped by the deployment's maximum."
    )
    credential_grace_seconds = models.PositiveIntegerField(
        default=86400, help_text="How long a rotated client secret keeps working by default."
    )
    delegation_max_depth = models.PositiveSmallIntegerField(
        default=3, db_default=3,
        help_text="How many agents a delegation chain may hold by default (an agent's policy"
        " may say fewer or more, up to 10).",
    )  # fmt: skip
    attestation_period_days = models.PositiveSmallIntegerField(
        default=90, db_default=90,
        help_text="How often each agent's sponsor must attest that it is still needed; an"
        " agent whose attestation lapses is suspended.",
    )  # fmt: skip

    assertion_audience_token_endpoint = models.BooleanField(
        default=False,
        help_text="Accept private_key_jwt assertions whose aud is the token endpoint's URL, "
        "not only the issuer identifier (RFC 7523 as older clients send it).",
    )
    did_key_algorithm = models.CharField(
        max_length=10,
        choices=DidKeyAlgorithm.choices,
        default=DidKeyAlgorithm.ED25519,
        help_text="The key type its agents' DIDs get.",
    )

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=OrganizationStatus.values),
                name="%(app_label)s_%(class)s_status_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(plan__in=Plan.values), name="%(app_label)s_%(class)s_plan_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.slug

    @property
    def is_system(self) -> bool:
        return self.id == SYSTEM_ORGANIZATION_ID


class StaffMembership(TimestampedModel):
    """Ties a Django staff user to exactly one organization, with a role."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="staff_membership"
    )
    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="staff_memberships"
    )
    role = models.CharField(max_length=20, choices=MemberRole.choices, default=MemberRole.ADMIN)

    class Meta:
        verbose_name = "person"
        verbose_name_plural = "people"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(role__in=MemberRole.values),
                name="%(app_label)s_%(class)s_role_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user.get_username()} ({self.role})"


class TokenUsage(models.Model):
    """Access tokens issued by an organization in one calendar month (UTC)."""

    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="token_usage"
    )
    month = models.DateField(help_text="The first day of the month.")
    tokens_issued = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-month"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "month"], name="%(app_label)s_%(class)s_unique_month"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization_id} {self.month:%Y-%m}: {self.tokens_issued}"
