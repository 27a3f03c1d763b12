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


class Scope(models.TextChoices):
    """Every scope a token or a staff session can hold: the one list of their names."""

    AGENTS_READ = "agents:read", "Read the organization's agents"
    AGENTS_WRITE = "agents:write", "Register and change agents"
    CREDENTIALS_WRITE = "credentials:write", "Manage agents' client secrets"
    AUDIT_READ = "audit:read", "Read the audit log"
    MEMBERS_WRITE = "members:write", "Manage the organization's members"
    WEBHOOKS_READ = "webhooks:read", "See webhook subscriptions and their deliveries"
    WEBHOOKS_MANAGE = "webhooks:manage", "Manage webhook subscriptions and see their deliveries"
    FEDERATION_READ = "federation:read", "See the organization's trusted partner issuers"
    FEDERATION_MANAGE = "federation:manage", "Manage the organization's trusted partner issuers"
    FEDERATION_VERIFY = "federation:verify", "Verify tokens issued by the organization's partners"
    RESOURCES_READ = "resources:read", "See the organization's registered resource servers"
    RESOURCES_MANAGE = "resources:manage", "Register resource servers and grant their scopes"
    ADMIN_ORGS = "admin:orgs", "Manage every organization (platform staff only)"
    OPENID = "openid", "OpenID Connect: an id_token, and the agent's identity at /agent-info"
    PROFILE = "profile", "The agent's name, status and capabilities at /agent-info"


AGENT_SCOPES = frozenset(
    {
        Scope.AGENTS_READ,
        Scope.AGENTS_WRITE,
        Scope.CREDENTIALS_WRITE,
        Scope.AUDIT_READ,
        Scope.WEBHOOKS_READ,
        Scope.WEBHOOKS_MANAGE,
        Scope.FEDERATION_READ,
        Scope.FEDERATION_MANAGE,
        Scope.FEDERATION_VERIFY,
        Scope.RESOURCES_READ,
        Scope.RESOURCES_MANAGE,
        Scope.OPENID,
        Scope.PROFILE,
    }
)
"""What an agent may be allowed to request at the token endpoint."""

IDENTITY_SCOPES = frozenset({Scope.OPENID, Scope.PROFILE})
"""OpenID Connect scopes: they open no API action, only the agent's own identity."""

DEFAULT_AGENT_SCOPES = (Scope.AGENTS_READ,)
"""An agent's scopes until an organization admin sets them."""

PLATFORM_SCOPES = frozenset({Scope.ADMIN_ORGS})
"""Scopes only platform staff hold."""

IMPLIED_SCOPES: dict[str, frozenset[str]] = {
    Scope.WEBHOOKS_MANAGE: frozenset({Scope.WEBHOOKS_READ}),
    Scope.FEDERATION_MANAGE: frozenset({Scope.FEDERATION_READ}),
    Scope.RESOURCES_MANAGE: frozenset({Scope.RESOURCES_READ}),
}
"""What holding a scope grants besides itself: managing something includes seeing it (tokens
issued with ``webhooks:manage`` before ``webhooks:read`` existed keep reading)."""


def scopes_implied(scopes: frozenset[str] | set[str]) -> frozenset[str]:
    """``scopes`` with everything they imply."""
    implied = set(scopes)
    for scope in scopes:
        implied |= IMPLIED_SCOPES.get(scope, frozenset())
    return frozenset(implied)


class DidKeyAlgorithm(models.TextChoices):
    """The key type of the DID keys the organization's agents get."""

    ED25519 = "Ed25519", "Ed25519 (EdDSA)"
    P256 = "P-256", "P-256 (ES256)"


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

_ADMINISTER = (AGENT_SCOPES - IDENTITY_SCOPES) | {Scope.MEMBERS_WRITE}
ROLE_SCOPES: dict[str, frozenset[str]] = {
    MemberRole.OWNER: _ADMINISTER,
    MemberRole.ADMIN: _ADMINISTER,
    MemberRole.MEMBER: frozenset({Scope.AGENTS_READ}),
    MemberRole.AUDITOR: frozenset(
        {
            Scope.AUDIT_READ,
            Scope.AGENTS_READ,
            Scope.WEBHOOKS_READ,
            Scope.FEDERATION_READ,
            Scope.RESOURCES_READ,
        }
    ),  # fmt: skip
}
"""Scopes a staff user holds through the role of their membership. A member reads the agents
(and the organization and its people); an auditor reads everything (the audit log, its proofs,
the controls and the report, the agents, webhooks, partners and resources) and changes
nothing."""
