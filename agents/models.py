"""Agents and their membership in their organization."""

import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models

from agentidp.models import OrgOwnedModel, TimestampedModel
from agents.choices import AgentStatus
from organizations.choices import MemberRole

ANY_ACTOR = "*"
# The longest delegation chain any policy may allow (RFC 8693 act nesting).
MAX_DELEGATION_DEPTH = 10


def delegation_actors_default() -> list[str]:
    """Any of the organization's agents may act for a new agent until its policy says who."""
    return [ANY_ACTOR]


class Agent(OrgOwnedModel, TimestampedModel):
    """An AI agent registered by an organization."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    capabilities = ArrayField(models.CharField(max_length=100), default=list, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # What its agent cards (A2A, AGNTCY) describe.
    version = models.CharField(max_length=50, default="1.0.0", blank=True)
    skills = models.JSONField(
        default=list, blank=True, help_text="[{id, name, description, tags}] for its agent cards."
    )
    authors = ArrayField(models.CharField(max_length=200), default=list, blank=True)
    status = models.CharField(
        max_length=20, choices=AgentStatus.choices, default=AgentStatus.ACTIVE
    )
    did = models.CharField(
        max_length=300, blank=True, default="", editable=False, help_text="Its did:web DID."
    )
    did_created_at = models.DateTimeField(null=True, blank=True, editable=False)
    tokens_not_before = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="Tokens issued before this moment are refused (set on suspension).",
    )
    # Delegation (RFC 8693 token exchange between the organization's agents): which agents may
    # act for this one ("*": any of the organization's), which of its scopes they may be handed
    # (empty: any it holds), and how long a chain may grow (null: the organization's default).
    delegation_actors = models.JSONField(default=delegation_actors_default, blank=True)
    delegation_scopes = ArrayField(models.CharField(max_length=100), default=list, blank=True)
    delegation_max_depth = models.PositiveSmallIntegerField(null=True, blank=True)
    # The person who answers for the agent: one of the organization's people. An agent loses
    # its sponsor only if the login is deleted; it is suspended when the sponsor leaves.
    sponsor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        related_name="sponsored_agents", editable=False,
    )  # fmt: skip
    attested_at = models.DateTimeField(
        null=True, blank=True, editable=False,
        help_text="When its sponsor last attested that it is still needed.",
    )  # fmt: skip
    # When its sponsor was last warned that the attestation falls due (once per period).
    attestation_warned_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"], name="%(app_label)s_%(class)s_unique_name"
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=AgentStatus.values),
                name="%(app_label)s_%(class)s_status_valid",
            ),
        ]
        indexes = [models.Index(fields=["organization", "status"], name="agents_agent_org_status")]

    def __str__(self) -> str:
        return self.name

    @property
    def sponsor_username(self) -> str | None:
        """The sponsor's username (read with the agent where the caller joined it)."""
        if self.sponsor_id is None:
            return None
        known = self.__dict__.get("_sponsor_username")
        if isinstance(known, str):
            return known
        return str(self.sponsor.get_username()) if self.sponsor else None


class OrganizationMember(OrgOwnedModel, TimestampedModel):
    """An agent's role within its organization (owner, admin, member, auditor)."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=MemberRole.choices, default=MemberRole.MEMBER)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "agent"], name="%(app_label)s_%(class)s_unique_agent"
            ),
            models.CheckConstraint(
                condition=models.Q(role__in=MemberRole.values),
                name="%(app_label)s_%(class)s_role_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.agent.name} ({self.role})"
