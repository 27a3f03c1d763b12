"""The token endpoint's federated grants (registered with ``oidc.extensions``):

* RFC 7523's JWT bearer grant: ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` and
  ``assertion=<a partner's token>``;
* RFC 8693 token exchange: ``grant_type=urn:ietf:params:oauth:grant-type:token-exchange``,
  ``subject_token=<a partner's token>`` and its ``subject_token_type``.

The assertion is the only authentication (RFC 7523 3.1): no client credentials are taken. Its
issuer names the organization that trusts it (``organization_id`` picks one when several here
do). Errors are RFC 6749 5.2 bodies; each refusal is audited in the trusting organization as
``federation.rejected`` with its reason.
"""

import uuid

from django.http import HttpRequest, HttpResponse, JsonResponse
from oauth2_provider.oauth2_validators import is_valid_resource_uri

from agentidp.errors import NO_STORE, JSONValue
from agentidp.events import event_record_after_request
from agentidp.tenancy import tenant_context
from federation.selectors import issuer_organizations
from federation.services import (
    Check,
    ExchangeRefused,
    assertion_exchange,
    exchange_rejection_data,
    federated_actor,
    partner_token_check,
    token_parsed,
)
from federation.verification import Refused
from oidc.resources import TARGET_REFUSED_EVENT
from oidc.tokens import (
    ACCESS_TOKEN_TYPE,
    EXCHANGE_TOKEN_TYPES,
    JWT_TOKEN_TYPE,
    TOKEN_EXCHANGE,
)
from oidc.views import oauth_error
from webhooks.choices import EventType

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class _Invalid(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def _assertion(request: HttpRequest, grant_type: str) -> str:
    form = request.POST
    if request.headers.get("Authorization") or "client_secret" in form:
        raise _Invalid(
            "invalid_request",
            "This grant is authenticated by its assertion alone: send no client credentials.",
        )
    if grant_type == JWT_BEARER:
        assertion = form.get("assertion", "")
        if not assertion:
            raise _Invalid("invalid_request", "The assertion parameter is required.")
        return assertion
    token = form.get("subject_token", "")
    if not token:
        raise _Invalid("invalid_request", "The subject_token parameter is required.")
    if form.get("subject_token_type") not in EXCHANGE_TOKEN_TYPES:
        raise _Invalid(
            "invalid_request",
            f"subject_token_type must be {ACCESS_TOKEN_TYPE} or {JWT_TOKEN_TYPE}.",
        )
    if form.get("requested_token_type", ACCESS_TOKEN_TYPE) != ACCESS_TOKEN_TYPE:
        raise _Invalid("invalid_request", f"Only {ACCESS_TOKEN_TYPE} can be issued.")
    if "actor_token" in form or "actor_token_type" in form:
        raise _Invalid("invalid_request", "actor_token is not supported.")
    return token


def _audiences(request: HttpRequest) -> list[str]:
    values = [v for key in ("resource", "audience") for v in request.POST.getlist(key)]
    if not all(is_valid_resource_uri(value) for value in values):
        raise _Invalid(
            "invalid_target", "resource and audience must be absolute URIs without a fragment"
        )
    return sorted(set(values))


def _organization(request: HttpRequest, issuer: str) -> uuid.UUID:
    trusting = issuer_organizations(issuer)
    hint = request.POST.get("organization_id")
    if hint is not None:
        try:
            chosen = uuid.UUID(hint)
        except ValueError as exc:
            raise _Invalid("invalid_request", "organization_id is not a valid UUID.") from exc
        trusting = [o for o in trusting if o == chosen]
    if not trusting:
        raise _Invalid("invalid_grant", "unknown_issuer: no partner here has this issuer.")
    if len(trusting) > 1:
        raise _Invalid(
            "invalid_request",
            "Several organizations here trust this issuer: name one with organization_id.",
        )
    return trusting[0]


def federated_grant(request: HttpRequest) -> HttpResponse:
    """Exchange a partner's verified assertion for a short-lived local access token."""
    grant_type = request.POST.get("grant_type", "")
    try:
        assertion = _assertion(request, grant_type)
        audiences = _audiences(request)
        parsed = token_parsed(assertion)
        organization_id = _organization(request, parsed.issuer)
    except _Invalid as invalid:
        return oauth_error(invalid.error, invalid.description, 400)
    except Refused as refused:
        return oauth_error("invalid_grant", f"{refused.reason.value}: {refused.detail}", 400)
    check: Check | None = None
    try:
        with tenant_context(organization_id):
            check = partner_token_check(
                organization_id=organization_id, token=assertion, parsed=parsed
            )
            exchanged = assertion_exchange(
                organization_id=organization_id, check=check, grant_type=grant_type,
                scope=request.POST.get("scope"), audiences=audiences,
            )  # fmt: skip
    except ExchangeRefused as refused:
        target_refused = refused.error == "invalid_target"
        event_record_after_request(
            organization_id=organization_id,
            actor=federated_actor(organization_id=organization_id, subject=parsed.issuer),
            action=TARGET_REFUSED_EVENT if target_refused else EventType.FEDERATION_REJECTED,
            subject_type="federation_partner",
            subject_id=str(check.partner.id) if check and check.partner else "",
            data={"reason": "partner_resource", "error": "invalid_target",
                  "resources": list[JSONValue](audiences[:5])}
            if target_refused else exchange_rejection_data(check, grant_type),
        )  # fmt: skip
        response = oauth_error(refused.error, refused.description, refused.status)
        if refused.retry_after:
            response["Retry-After"] = str(refused.retry_after)
        return response
    body: dict[str, JSONValue] = {
        "access_token": exchanged.access_token,
        "token_type": "Bearer",
        "expires_in": exchanged.expires_in,
        "scope": exchanged.scope,
    }
    if grant_type == TOKEN_EXCHANGE:
        body["issued_token_type"] = ACCESS_TOKEN_TYPE
    return JsonResponse(body, headers=NO_STORE)
