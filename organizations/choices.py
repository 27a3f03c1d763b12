"""Choices for organizations."""

from django.db import models


class Plan(models.TextChoices):
    FREE = "free", "Free"
    PRO = "pro", "Pro"
    ENTERPRISE = "enterprise", "Enterprise"


class OrganizationStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"
    DELETED = "deleted", "Deleted"


class MemberRole(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    AUDITOR = "auditor", "Auditor"


PLAN_QUOTAS: dict[str, tuple[int, int]] = {
    Plan.FREE: (10, 100_000),
    Plan.PRO: (250, 10_000_000),
    Plan.ENTERPRISE: (10_000, 1_000_000_000),
}
"""Default ``(max_agents, max_tokens_per_month)`` for each plan."""

ROLE_SCOPES: dict[str, frozenset[str]] = {
    MemberRole.OWNER: frozenset(
        {"agents:read", "agents:write", "audit:read", "members:write", "credentials:write"}
    ),
    MemberRole.ADMIN: frozenset(
        {"agents:read", "agents:write", "audit:read", "members:write", "credentials:write"}
    ),
    MemberRole.MEMBER: frozenset({"agents:read"}),
    MemberRole.AUDITOR: frozenset({"agents:read", "audit:read"}),
}
"""Scopes a staff user holds through the role of their membership."""

PLATFORM_SCOPES = frozenset({"admin:orgs"})
