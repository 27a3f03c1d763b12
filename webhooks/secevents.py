"""Revocations as Security Event Tokens (RFC 8417) for receivers that speak the Shared Signals
Framework: a ``set`` subscription (:class:`webhooks.choices.WebhookFormat`) is sent, for each
revocation it subscribes to, a SET signed by the deployment's current signing key (in the
JWKS; ``typ: secevent+jwt``), pushed as RFC 8935 describes (``application/secevent+jwt``, the
Standard Webhooks signature headers as well).

Each carries one CAEP ``session-revoked`` event: what lost access (``sub_id``, an RFC 9493
subject identifier: the token tree's root ``jti``, the agent, the secret or the organization),
who started it (``initiating_entity``), why (``reason_admin``), and two members of our own:
``root`` (the same subject, named as the tree's root) and ``revoked`` (how many tokens went
with it, where the event knows).
"""

import time

from agentidp.conf import agentidp_settings
from agentidp.errors import JSONValue
from compliance.models import AuditEvent
from oidc.keys import signing_key_current
from oidc.tokens import jws_sign
from webhooks.choices import EventType

SECEVENT_TYPE = "secevent+jwt"
MEDIA_TYPE = "application/secevent+jwt"
SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"

# who started it, in CAEP's words, by the kind of actor the audit log names
_INITIATORS = {"user": "admin", "agent": "user", "system": "system", "federated": "user"}


def _subject(event: AuditEvent) -> dict[str, JSONValue]:
    return {"format": "opaque", "id": event.subject_id}


def _revoked(event: AuditEvent) -> int | None:
    data = event.data
    if event.action == EventType.TOKEN_REVOKED:
        return 1 + int(data.get("derived_revoked") or 0)
    if event.action == EventType.AGENT_TOKENS_REVOKED:
        return int(data.get("tokens") or 0)
    return None


def _reason(event: AuditEvent) -> str:
    reason = str(event.data.get("reason") or "")
    return reason or {
        EventType.TOKEN_REVOKED: "token revoked, with every token exchanged from it",
        EventType.AGENT_TOKENS_REVOKED: "every token of the agent revoked",
        EventType.AGENT_SUSPENDED: "agent suspended",
        EventType.AGENT_DECOMMISSIONED: "agent decommissioned",
        EventType.CREDENTIAL_REVOKED: "client secret revoked, with its tokens",
        EventType.AGENTS_KILL_SWITCH: "kill switch: agents suspended",
    }.get(EventType(event.action), event.action)


def security_event_token(event: AuditEvent, *, audience: str) -> bytes:
    """The SET announcing ``event`` (one of :data:`webhooks.choices.SECURITY_EVENTS`) to the
    receiver at ``audience``."""
    subject = _subject(event)
    payload: dict[str, JSONValue] = {
        "event_timestamp": int(event.occurred_at.timestamp()),
        "initiating_entity": _INITIATORS.get(event.actor_type, "system"),
        "reason_admin": {"en": _reason(event)},
        "root": {"type": event.subject_type, **subject},
        "agentidp_event": event.action,
    }
    revoked = _revoked(event)
    if revoked is not None:
        payload["revoked"] = revoked
    claims: dict[str, JSONValue] = {
        "iss": agentidp_settings().issuer,
        "iat": int(time.time()),
        "jti": str(event.id),
        "aud": audience,
        "txn": str(event.id),
        "sub_id": subject,
        "organization_id": str(event.organization_id),
        "events": {SESSION_REVOKED: payload},
    }
    return jws_sign(claims, signing_key_current(), typ=SECEVENT_TYPE).encode()
