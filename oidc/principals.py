"""Resolves ``Authorization: Bearer`` into an agent principal (a tenancy-middleware resolver)."""

import logging
import uuid

from django.db import connection
from django.http import HttpRequest
from prometheus_client import Counter
from redis import RedisError

from agentidp.principals import AuthenticationRejected, AuthenticationUnavailable, Principal
from agentidp.tenancy import organization_applied
from oidc.revocation import jti_is_revoked
from oidc.tokens import InvalidToken, access_token_verify

logger = logging.getLogger("agentidp.auth")
BEARER_REJECTIONS = Counter(
    "agentidp_bearer_rejections_total", "Bearer tokens refused by the API, by reason.", ["reason"]
)

STATUS_SQL = """
SELECT set_config('app.organization_id', %s, true),
       (SELECT a.status FROM agents_agent a WHERE a.id = %s),
       (SELECT o.status FROM organizations_organization o WHERE o.id = %s::uuid)
"""


def _reject(reason: str) -> AuthenticationRejected:
    BEARER_REJECTIONS.labels(reason=reason).inc()
    return AuthenticationRejected(reason)


def bearer_token_principal(request: HttpRequest) -> Principal | None:
    """Verify the bearer token offline, then its revocation and its agent's standing."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() != "bearer ":
        return None
    try:
        verified = access_token_verify(header[7:].strip())
        revoked = jti_is_revoked(verified.jti)
    except InvalidToken as exc:
        raise _reject(exc.reason) from exc
    except RedisError as exc:
        # Fail closed: without the revocation list a revoked token would pass.
        logger.warning("revocation list unavailable; refusing bearer token")
        BEARER_REJECTIONS.labels(reason="revocation_unavailable").inc()
        raise AuthenticationUnavailable from exc
    if revoked:
        raise _reject("revoked")
    organization_id = verified.organization_id
    try:
        agent_id = uuid.UUID(verified.subject)
    except ValueError as exc:
        raise _reject("claims") from exc
    with connection.cursor() as cursor:
        cursor.execute(STATUS_SQL, [str(organization_id), agent_id, str(organization_id)])
        row = cursor.fetchone()
    organization_applied(organization_id)
    if row is None or row[1] != "active" or row[2] != "active":
        raise _reject("agent_inactive")
    return Principal(
        kind="agent",
        id=str(agent_id),
        organization_id=organization_id,
        scopes=verified.scopes,
        display=str(verified.claims.get("client_id", "")),
    )
