"""Resolves ``Authorization: Bearer`` or ``DPoP`` into an agent principal (a tenancy-middleware
resolver)."""

import logging

from django.http import HttpRequest
from prometheus_client import Counter
from redis import RedisError

from agentidp.principals import AuthenticationRejected, AuthenticationUnavailable, Principal
from oidc.dpop import (
    INVALID_PROOF,
    USE_NONCE,
    DpopRefused,
    dpop_challenge,
    nonce_issue,
    proof_verify,
    request_urls,
    token_binding,
)
from oidc.services import token_principal
from oidc.tokens import InvalidToken, VerifiedToken, access_token_verify

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


def presented_dpop(request: HttpRequest) -> str | None:
    """The token of ``Authorization: DPoP`` (RFC 9449 7.1)."""
    header = request.headers.get("Authorization", "")
    if header[:5].lower() == "dpop ":
        return header[5:].strip()
    return None


def _dpop_rejected(reason: str, error: str, description: str) -> AuthenticationRejected:
    BEARER_REJECTIONS.labels(reason=f"dpop_{reason}").inc()
    headers = {"DPoP-Nonce": nonce_issue()} if error in (USE_NONCE, INVALID_PROOF) else {}
    return AuthenticationRejected(
        f"dpop_{reason}", challenge=dpop_challenge(error, description), headers=headers
    )


def _binding_checked(request: HttpRequest, token: str, verified: VerifiedToken, dpop: bool) -> None:
    """A DPoP-bound token (``cnf.jkt``) only with ``Authorization: DPoP`` and a proof of its
    key for this request and token; a bearer token never under the DPoP scheme."""
    jkt = token_binding(verified.claims)
    if not dpop:
        if jkt is not None:
            raise _dpop_rejected(
                "bound_as_bearer", "invalid_token",
                "This token is DPoP-bound: send it as Authorization: DPoP with a proof.",
            )  # fmt: skip
        return
    if jkt is None:
        raise _dpop_rejected(
            "unbound", "invalid_token", "This is a bearer token: send it as Authorization: Bearer."
        )
    try:
        proof_verify(
            request.headers.get("DPoP"),
            method=str(request.method),
            urls=request_urls(request),
            access_token=token,
            jkt=jkt,
        )
    except DpopRefused as refused:
        raise _dpop_rejected(refused.reason, refused.error, refused.description) from refused


def bearer_token_principal(request: HttpRequest) -> Principal | None:
    """Verify the access token offline (its DPoP proof too, where it is bound), then its
    revocation and its principal's standing."""
    token = presented_dpop(request)
    dpop = token is not None
    if token is None:
        token = presented_bearer(request)
    if token is None:
        return None
    try:
        verified = access_token_verify(token)
        _binding_checked(request, token, verified, dpop)
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
