"""Resolves ``Authorization: Bearer`` into an agent principal (a tenancy-middleware resolver)."""

import logging

from django.http import HttpRequest
from prometheus_client import Counter
from redis import RedisError

from agentidp.principals import AuthenticationRejected, AuthenticationUnavailable, Principal
from oidc.services import token_principal
from oidc.tokens import InvalidToken, access_token_verify

logger = logging.getLogger("agentidp.auth")
BEARER_REJECTIONS = Counter(
    "agentidp_bearer_rejections_total", "Bearer tokens refused by the API, by reason.", ["reason"]
)


def _reject(reason: str) -> AuthenticationRejected:
    BEARER_REJECTIONS.labels(reason=reason).inc()
    return AuthenticationRejected(reason)


AGENT_INFO_PATH = "/agent-info"
FORM = "application/x-www-form-urlencoded"


def presented_bearer(request: HttpRequest) -> str | None:
    """The bearer token of ``Authorization: Bearer`` (RFC 6750 2.1), or, on ``POST
    /agent-info`` only, of the form's ``access_token`` (RFC 6750 2.2, as OIDC UserInfo
    allows). Never from the URI: tokens there end up in logs."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    if (
        request.method == "POST"
        and request.path_info == AGENT_INFO_PATH
        and request.content_type == FORM
    ):
        return request.POST.get("access_token") or None
    return None


def bearer_token_principal(request: HttpRequest) -> Principal | None:
    """Verify the bearer token offline, then its revocation and its principal's standing."""
    token = presented_bearer(request)
    if token is None:
        return None
    try:
        verified = access_token_verify(token)
        principal = token_principal(verified)
    except InvalidToken as exc:
        raise _reject(exc.reason) from exc
    except RedisError as exc:
        # Fail closed: without the revocation list a revoked token would pass.
        logger.warning("revocation list unavailable; refusing bearer token")
        BEARER_REJECTIONS.labels(reason="revocation_unavailable").inc()
        raise AuthenticationUnavailable from exc
    if isinstance(principal, str):
        raise _reject(principal)
    return principal
