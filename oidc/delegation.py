"""RFC 8693 token exchange between an organization's own agents: delegation.

Agent B, authenticated as a client (as for ``client_credentials``), presents an access token
this deployment issued to agent A (``subject_token``, itself perhaps delegated already) and
gets a narrower token for A: ``sub`` stays A's, ``act`` names B with the subject token's own
``act`` nested inside it (RFC 8693 4.1), so a chain A -> B -> C shows C outermost. The token
records its parent (the subject token's ``jti``), so the delegation tree is known.

What B gets only narrows: the scopes requested, within the subject token's, within what B may
hold and within what A's delegation policy lets A delegate; a lifetime within the subject
token's remaining life; A's policy says which agents may act for it and how long a chain may
grow (the organization's default, at most :data:`MAX_DELEGATION_DEPTH`).

Token exchange *without* client authentication stays the federation grant (a partner's token
as the only credential, ``federation.grants``): :func:`is_local_exchange` tells them apart.
Each refusal is an RFC 6749 5.2 error and is audited as ``token.exchange_refused`` with its
reason.
"""

import time
import uuid
from typing import cast

from django.db import connection
from django.http import HttpRequest
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauthlib.common import Request as OAuthRequest
from oauthlib.oauth2.rfc6749 import errors
from oauthlib.oauth2.rfc6749.grant_types import ClientCredentialsGrant
from oauthlib.oauth2.rfc6749.tokens import TokenBase

from agentidp.tenancy import tenant_context
from agentidp.trust import DelegationTrust, delegation_trust
from agents.choices import AgentStatus
from agents.models import MAX_DELEGATION_DEPTH, Agent
from credentials.models import Client
from oidc.extensions import is_delegated
from oidc.services import client_refusal_record, token_principal
from oidc.tokens import (
    ACCESS_TOKEN_TYPE,
    EXCHANGE_TOKEN_TYPES,
    JWT_TOKEN_TYPE,
    TOKEN_EXCHANGE,
    Delegation,
    InvalidToken,
    Target,
    VerifiedToken,
    access_token_verify,
    act_claim,
    chain_depth,
    delegable_scopes,
    issuance,
    may_act_for,
)
from oidc.validators import AgentRequestValidator
from organizations.models import Organization

REFUSED_EVENT = "token.exchange_refused"  # noqa: S105 - an event name


def is_local_exchange(request: HttpRequest) -> bool:
    """A token exchange whose caller authenticates as one of this deployment's clients (HTTP
    Basic, a client secret in the form or a private_key_jwt assertion): delegation, not
    federation."""
    return request.POST.get("grant_type") == TOKEN_EXCHANGE and bool(
        request.headers.get("Authorization")
        or "client_secret" in request.POST
        or "client_assertion" in request.POST
    )


class Refused(errors.OAuth2Error):
    """An RFC 6749 5.2 refusal of the exchange, with the reason it is audited under."""

    def __init__(self, error: str, reason: str, description: str, request: OAuthRequest) -> None:
        self.error = error
        self.reason = reason
        self.status_code = 400
        super().__init__(description=f"{reason}: {description}", request=request)


class TokenExchangeGrant(ClientCredentialsGrant):
    """oauthlib's client-credentials flow (client authentication, admission, scopes, the token
    handler and the validator's ``save_bearer_token``), with the subject token checked and the
    delegation worked out in between."""

    def __init__(self, request_validator: OAuth2Validator) -> None:
        super().__init__(request_validator)
        self.register_token_modifier(_issued_token_type)

    def validate_token_request(self, request: OAuthRequest) -> None:
        if request.grant_type != TOKEN_EXCHANGE:
            raise errors.UnsupportedGrantTypeError(request=request)
        self.validate_client_confidential(request)
        self.validate_grant_type(request)
        client = cast(Client, request.client)
        # A registered resource (RFC 8707) is resolved for the caller, in its organization.
        target = cast(AgentRequestValidator, self.request_validator).target(request, client)
        try:
            delegation, scopes = _delegation(request, target)
        except Refused as refused:
            _refusal_record(request, refused)
            raise
        issuance(request).delegation = delegation
        request.scopes = scopes
        self.validate_scopes(request)


def _issued_token_type(
    token: dict[str, object],
    token_handler: TokenBase | None = None,
    request: OAuthRequest | None = None,
) -> dict[str, object]:
    """RFC 8693 2.2.1: the response says what it issued (oauthlib calls it with the token)."""
    token["issued_token_type"] = ACCESS_TOKEN_TYPE
    return token


def _form(request: OAuthRequest, name: str) -> str:
    value = getattr(request, name, None)
    return str(value) if value else ""


def _delegation(request: OAuthRequest, target: Target | None) -> tuple[Delegation, list[str]]:
    client = cast(Client, request.client)
    subject_token = _form(request, "subject_token")
    if not subject_token:
        raise Refused("invalid_request", "missing", "subject_token is required.", request)
    if _form(request, "subject_token_type") not in EXCHANGE_TOKEN_TYPES:
        raise Refused(
            "invalid_request", "subject_token_type",
            f"subject_token_type must be {ACCESS_TOKEN_TYPE} or {JWT_TOKEN_TYPE}.", request,
        )  # fmt: skip
    if _form(request, "requested_token_type") not in ("", ACCESS_TOKEN_TYPE):
        raise Refused(
            "invalid_request", "requested_token_type", f"Only {ACCESS_TOKEN_TYPE} is issued.",
            request,
        )  # fmt: skip
    subject = _verified(request, subject_token, "subject_token")
    organization_id = subject.organization_id
    trust: DelegationTrust | None = None
    if organization_id != client.organization_id:
        trust = delegation_trust(organization_id, client.organization_id)
        if trust is None:
            raise Refused(
                "invalid_grant", "foreign_subject",
                "The subject token belongs to another organization, which does not trust this"
                " one's agents to act for its own (a partner entry for this deployment that"
                " allows delegation).", request,
            )  # fmt: skip
    if target is not None:
        _target_checked(request, subject, target, trust)
    _actor_checked(request, client)
    # The subject side is read in the subject's organization (the caller's, or one that
    # trusts it); the token itself is the caller's and is recorded in the caller's.
    with tenant_context(organization_id):
        _standing(request, subject, "subject_token")
        delegation, scopes = _delegated(request, client, subject, trust, target)
        if not _parent_live(organization_id, subject.jti):
            raise Refused(
                "invalid_grant", "revoked", "The subject_token cannot be used now.", request
            )
    return delegation, scopes


def _actor_checked(request: OAuthRequest, client: Client) -> None:
    actor_token = _form(request, "actor_token")
    if actor_token:
        if _form(request, "actor_token_type") not in EXCHANGE_TOKEN_TYPES:
            raise Refused(
                "invalid_request", "actor_token_type",
                f"actor_token_type must be {ACCESS_TOKEN_TYPE} or {JWT_TOKEN_TYPE}.", request,
            )  # fmt: skip
        actor = _verified(request, actor_token, "actor_token")
        if actor.claims.get("client_id") != client.client_id or "act" in actor.claims:
            raise Refused(
                "invalid_grant", "foreign_actor",
                "The actor token must be the caller's own token, issued to it directly.", request,
            )  # fmt: skip
        _standing(request, actor, "actor_token")
    elif _form(request, "actor_token_type"):
        raise Refused(
            "invalid_request", "actor_token", "actor_token_type without actor_token.", request
        )


def _target_checked(
    request: OAuthRequest, subject: VerifiedToken, target: Target, trust: DelegationTrust | None
) -> None:
    """A token for a registered resource is exchanged only from one for that resource (the
    audience only narrows), between agents of the resource's organization."""
    if trust is not None:
        raise Refused(
            "invalid_target", "foreign_resource",
            "Across organizations, tokens are exchanged for the platform API only.", request,
        )  # fmt: skip
    audiences = subject.claims.get("aud")
    listed = audiences if isinstance(audiences, list) else [audiences]
    if target.identifier not in listed:
        raise Refused(
            "invalid_target", "audience_widened",
            "The subject token is not for this resource: an exchange only narrows its audience.",
            request,
        )  # fmt: skip


def _delegated(
    request: OAuthRequest,
    client: Client,
    subject: VerifiedToken,
    trust: DelegationTrust | None,
    target: Target | None,
) -> tuple[Delegation, list[str]]:
    """What A's policy lets the caller be handed, read in A's organization."""
    agent = Agent.objects.filter(
        organization_id=subject.organization_id, id=subject.subject
    ).first()
    if agent is None or agent.status != AgentStatus.ACTIVE:
        raise Refused(
            "invalid_grant", "subject_inactive", "The subject agent is not active.", request
        )
    if agent.id == client.agent_id:
        raise Refused(
            "invalid_request", "self", "An agent does not exchange its own token for itself.",
            request,
        )  # fmt: skip
    actors = agent.delegation_actors if isinstance(agent.delegation_actors, list) else []
    if not may_act_for(actors, client.agent_id, across=trust is not None):
        raise Refused(
            "invalid_grant", "not_allowed_to_act",
            f"{agent.name}'s delegation policy does not let this agent act for it.", request,
        )  # fmt: skip
    act = act_claim(
        agent_id=client.agent_id, client_id=client.client_id,
        organization_id=client.organization_id, previous=subject.claims.get("act"),
    )  # fmt: skip
    depth = chain_depth(act)
    limit = min(MAX_DELEGATION_DEPTH, agent.delegation_max_depth or _organization_depth(agent))
    if depth > limit:
        raise Refused(
            "invalid_request", "chain_too_deep",
            f"The chain would hold {depth} actors; {agent.name}'s policy allows {limit}.", request,
        )  # fmt: skip
    scopes = _scopes(request, client, agent, subject, trust, target)
    delegation = Delegation(
        subject_agent_id=agent.id, act=act, parent_jti=subject.jti, depth=depth,
        expires_at=subject.expires_at, organization_id=subject.organization_id,
    )  # fmt: skip
    if delegation.expires_at - int(time.time()) <= 0:
        raise Refused("invalid_grant", "expired", "The subject token has expired.", request)
    return delegation, scopes


def _parent_live(organization_id: uuid.UUID, jti: str) -> bool:
    """Whether the subject token is unrevoked in the database, read once its organization's
    audit chain head is held (to the commit): a revocation of its tree either committed
    before, and is seen, or waits for this token, and revokes it too."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT oidc_delegation_parent_live(%s, %s)", [organization_id, jti])
        row = cursor.fetchone()
    return bool(row and row[0])


def _organization_depth(agent: Agent) -> int:
    """The organization's default longest chain (the client's record carries no such field)."""
    depth = (
        Organization.objects.filter(id=agent.organization_id)
        .values_list("delegation_max_depth", flat=True)
        .first()
    )
    return int(depth or 1)


def _verified(request: OAuthRequest, token: str, name: str) -> VerifiedToken:
    """A token this deployment issued, checked offline (any audience)."""
    try:
        verified = access_token_verify(token, any_audience=True)
    except InvalidToken as invalid:
        raise Refused(
            "invalid_grant",
            invalid.reason,
            f"The {name} is not a valid token of this deployment.",
            request,
        ) from invalid
    if is_delegated(verified):
        raise Refused(
            "invalid_grant", "federated",
            f"The {name} stands for a partner's agent; it cannot be delegated further.", request,
        )  # fmt: skip
    return verified


def _standing(request: OAuthRequest, verified: VerifiedToken, name: str) -> None:
    """Refused unless the API would accept the token now."""
    standing = token_principal(verified)
    if isinstance(standing, str):
        raise Refused("invalid_grant", standing, f"The {name} cannot be used now.", request)


def _scopes(
    request: OAuthRequest,
    client: Client,
    agent: Agent,
    subject: VerifiedToken,
    trust: DelegationTrust | None,
    target: Target | None,
) -> list[str]:
    """Requested ∩ the subject token's ∩ what the caller may hold (on the resource, for a
    registered one) ∩ what A delegates (∩ what A's organization lets another organization's
    agents be handed)."""
    caller = target.granted if target is not None else client.allowed_scopes
    allowed = delegable_scopes(
        subject.scopes, caller, agent.delegation_scopes,
        trust.scopes if trust is not None else None,
    )  # fmt: skip
    requested = _form(request, "scope").split()
    if requested:
        refused = sorted(set(requested) - allowed)
        if refused:
            raise Refused(
                "invalid_scope", "scope_not_delegable",
                f"Not within the subject token, the caller's scopes and the delegation policy:"
                f" {' '.join(refused)}.", request,
            )  # fmt: skip
        return sorted(set(requested))
    if not allowed:
        raise Refused(
            "invalid_scope", "scope_not_delegable",
            "No scope is left to delegate: the subject token, the caller's scopes and the"
            " delegation policy have none in common.", request,
        )  # fmt: skip
    return sorted(allowed)


def _refusal_record(request: OAuthRequest, refused: Refused) -> None:
    client = cast(Client, request.client)
    client_refusal_record(client, REFUSED_EVENT, {"reason": refused.reason, "error": refused.error})
