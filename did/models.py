"""The public keys of agents' DIDs (private parts, when we hold them, only in the secret store)."""

import uuid

from django.db import models

from agentidp.models import OrgOwnedModel
from did.choices import DidKeyStatus


class AgentDidKey(OrgOwnedModel):
    """One verification method of an agent's DID document."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="did_keys")
    kid = models.CharField(max_length=64, help_text="The key's JWK thumbprint (RFC 7638).")
    algorithm = models.CharField(max_length=10, help_text="EdDSA (Ed25519) or ES256 (P-256).")
    public_jwk = models.JSONField()
    status = models.CharField(
        max_length=10, choices=DidKeyStatus.choices, default=DidKeyStatus.ACTIVE
    )
    custodial = models.BooleanField(
        default=True, help_text="We hold the private part (in the secret store); else the agent."
    )
    private_key_ref = models.TextField(
        blank=True,
        default="",
        db_default="",
        editable=False,
        help_text="Custodial keys: where the private part is in the secret store (encrypted).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "agent_did_keys"
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["agent", "kid"], name="agent_did_keys_unique_kid"),
            models.UniqueConstraint(
                fields=["agent"],
                condition=models.Q(status="active"),
                name="agent_did_keys_one_active",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kid} ({self.status})"
