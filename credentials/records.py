"""A client as plain values: what authenticating it needs, read in one round trip.

The token endpoint's full path wraps it in the model instances django-oauth-toolkit works with;
its lean path (``oidc.lean``) keeps it as it is in a per-process cache.
"""

import hmac
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from agents.choices import AgentStatus
from organizations.choices import OrganizationStatus


@dataclass(frozen=True, slots=True)
class ClientRecord:
    """What authenticating a client needs to know, as plain values (no model instances): the
    client, its agent's and organization's standing, the organization's limits and the
    client's live (unrevoked) secrets as ``(credential id, digest, expiry)``."""

    pk: int
    client_id: str
    agent_id: uuid.UUID
    organization_id: uuid.UUID
    allowed_scopes: tuple[str, ...]
    agent_status: str
    organization_status: str
    plan: str
    max_tokens_per_month: int
    access_token_lifetime_seconds: int
    secrets: tuple[tuple[uuid.UUID, str, datetime | None], ...]
    # What an id_token says of the agent, and the algorithm the client's id_tokens use.
    agent_name: str
    capabilities: tuple[str, ...]
    id_token_signed_response_alg: str
    agent_did: str
    # Who may act for the agent through token exchange ("*": any agent of its organization).
    delegation_actors: tuple[str, ...] = ("*",)
    # The client takes DPoP-bound tokens only (RFC 9449 5.2): the lean path declines it.
    dpop_bound_access_tokens: bool = False

    def refusal(self) -> str:
        """Why this client may not authenticate at all, or ``""``."""
        if self.organization_status != OrganizationStatus.ACTIVE:
            return "organization_suspended"
        if self.agent_status != AgentStatus.ACTIVE:
            return f"agent_{self.agent_status}"
        return ""

    def secret_check(self, digest: str, now: datetime) -> tuple[uuid.UUID | None, str]:
        """``(credential id, "")`` for the live, unexpired secret whose digest is ``digest``
        (compared in constant time), else ``(None, reason)``."""
        for credential_id, stored, expires_at in self.secrets:
            if hmac.compare_digest(stored, digest):
                if expires_at is not None and expires_at <= now:
                    return None, "secret_expired"
                return credential_id, ""
        return None, "bad_secret"

    def scopes_allowed(self, scopes: Iterable[str]) -> bool:
        return set(scopes) <= set(self.allowed_scopes)
