"""Choices for the authorization server."""

from django.db import models


class KeyStatus(models.TextChoices):
    NEXT = "next", "Next (published, not yet signing)"
    CURRENT = "current", "Current (signing)"
    RETIRED = "retired", "Retired (verifying until its tokens expire)"


class RevocationReason(models.TextChoices):
    """Why a token was revoked before it expired."""

    CLIENT_REQUEST = "client_request", "Revoked by its client (RFC 7009)"
    CREDENTIAL_REVOKED = "credential_revoked", "The secret it was issued with was revoked"
    AGENT_SUSPENDED = "agent_suspended", "Its agent was suspended"
    AGENT_DECOMMISSIONED = "agent_decommissioned", "Its agent was decommissioned"
    AGENT_TOKENS_REVOKED = "agent_tokens_revoked", "Every token of its agent was revoked"
    LINEAGE = "lineage", "A token it was exchanged from (at any depth) was revoked"
