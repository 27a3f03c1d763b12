"""OAuth 2.0 endpoints (RFC 6749 error bodies), JWKS, discovery and ``/agent-info``."""

import json
import time
import uuid
from typing import cast

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from oauth2_provider import views as dot_views
from oauth2_provider.signals import app_authorized
from oauth2_provider.views.metadata import OAuthProtectedResourceMetadataView
from oauthlib.common import Request as OAuthRequest
from oauthlib.oauth2.rfc6749.errors import CustomOAuth2Error
from prometheus_client import Histogram

from agentidp.addresses import client_address
from agentidp.conf import agentidp_settings
from agentidp.errors import NO_STORE, bearer_challenge, standard_problem
from agentidp.middleware import safe_methods_only
from agentidp.principals import Principal
from credentials.models import Client
from oidc import resources
from oidc.delegation import is_local_exchange
from oidc.dpop import DPOP_ALGORITHMS, nonce_issue, request_urls
from oidc.extensions import grant_type_handler
from oidc.ratelimit import token_request_refund
from oidc.services import (
    agent_info,
    agent_info_jwt,
    discovery_document,
    jwks_document,
    token_introspect,
)
from oidc.statuslists import MEDIA_TYPE as STATUS_LIST_MEDIA_TYPE
from oidc.statuslists import status_list_served, status_list_ttl
from oidc.tokens import ISSUANCE_KEY, Issuance, api_audience, issuance_attach
from oidc.validators import AgentRequestValidator
from organizations.choices import AGENT_SCOPES, Scope

TOKEN_LATENCY = Histogram(
    "agentidp_token_endpoint_seconds",
    "Token endpoint latency by HTTP status.",
    ["status"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
)
# RFC 6749 5.2: answer a failed client authentication with the scheme clients use (Basic).
BASIC_CHALLENGE = 'Basic realm="agentidp", error="invalid_client"'


REPEATABLE = frozenset({"resource", "audience"})


class TokenView(dot_views.TokenView):
    """DOT's token endpoint (the full path: every refusal, and what the lean path declines),
    adding ``Retry-After`` on 429 and 503, ``WWW-Authenticate`` on 401 and the latency
    histogram. The request's state (:class:`Issuance`) travels in ``request.META``."""

    def post(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        started = time.perf_counter()
        status = "500"
        state = Issuance(source_address=client_address(request))
        state.dpop_proof = request.META.get("HTTP_DPOP")
        state.dpop_urls = request_urls(request)
        request.META[ISSUANCE_KEY] = state
        try:
            # resource (RFC 8707 2) and audience (RFC 8693 2.1) may be repeated; the rest not
            repeated = sorted(
                key
                for key, values in request.POST.lists()
                if len(values) > 1 and key not in REPEATABLE
            )
            scheme = request.headers.get("Authorization", "").split(" ", 1)[0].lower()
            if scheme and scheme != "basic":
                # RFC 6749 2.3: clients authenticate here with HTTP Basic or in the form; any
                # other scheme (a bearer token, say) is no client authentication we support
                response: HttpResponse = oauth_error(
                    "invalid_client",
                    "Client authentication is HTTP Basic (client_secret_basic) or the form "
                    "(client_secret_post); no other Authorization scheme is accepted here.",
                    401,
                )
            elif repeated:
                # RFC 6749 3.1: parameters must not be included more than once (Django's form
                # would otherwise hand DOT only the last value).
                response = oauth_error(
                    "invalid_request", f"Repeated parameter: {', '.join(repeated)}.", 400
                )
            else:
                # A grant type an app registered (federation's JWT bearer and token exchange)
                # is answered by its handler; client_credentials, and token exchange by an
                # authenticated client (delegation between local agents), by
                # django-oauth-toolkit.
                handler = grant_type_handler(request.POST.get("grant_type", ""))
                if handler is not None and not is_local_exchange(request):
                    response = (
                        handler(request)
                        if state.dpop_proof is None
                        else oauth_error(
                            "invalid_request",
                            "DPoP-bound tokens are issued for client_credentials and token "
                            "exchange between local agents, not for a partner's token.",
                            400,
                        )
                    )
                else:
                    response = self._dot_post(request, state, *args, **kwargs)
            status = str(response.status_code)
            if state.dpop_proof is not None or state.dpop_refused:
                # RFC 9449 8: the nonce the next proof carries
                response["DPoP-Nonce"] = nonce_issue()
            if response.status_code in (429, 503) and state.retry_after:
                response["Retry-After"] = str(state.retry_after)
            token_response_headers(response)
            return response
        finally:
            TOKEN_LATENCY.labels(status=status).observe(time.perf_counter() - started)

    def _dot_post(
        self, request: HttpRequest, state: Issuance, *args: object, **kwargs: object
    ) -> HttpResponse:
        """DOT's processing; a token it reserved and did not issue is given back."""
        issued = False
        try:
            response: HttpResponse = super().post(request, *args, **kwargs)
            issued = response.status_code == 200
        finally:
            if state.reserved and not issued:
                token_request_refund(state.reserved)
        return response

    def authorization_flow_token_response(
        self, request: HttpRequest, *args: object, **kwargs: object
    ) -> HttpResponse:
        """DOT's, less its re-read of the token just written: the validator kept the row."""
        url, headers, body, status = self.create_token_response(request)
        response = HttpResponse(content=body, status=status)
        for header, value in headers.items():
            response[header] = value
        state = request.META[ISSUANCE_KEY]
        if status == 200 and isinstance(state, Issuance) and state.issued is not None:
            app_authorized.send(sender=self, request=request, token=state.issued)
        return response


def token_response_headers(response: HttpResponse) -> None:
    """What every answer of the OAuth endpoints carries: never cached, Basic challenge on 401."""
    if response.status_code == 401:
        response["WWW-Authenticate"] = BASIC_CHALLENGE
    for header, value in NO_STORE.items():
        response[header] = value


class RevokeTokenView(dot_views.RevokeTokenView):
    """RFC 7009 through DOT; the validator checks the token belongs to the caller.

    Success is ``200 {}`` as JSON (oauthlib answers with an empty body), never cached."""

    def post(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        state = Issuance(source_address=client_address(request))
        request.META[ISSUANCE_KEY] = state
        response: HttpResponse = super().post(request, *args, **kwargs)
        if response.status_code in (429, 503) and state.retry_after:
            response["Retry-After"] = str(state.retry_after)
        if response.status_code == 200 and not response.content:
            response = JsonResponse({})
        token_response_headers(response)
        return response


def oauth_error(error: str, description: str, status: int) -> JsonResponse:
    response = JsonResponse({"error": error, "error_description": description}, status=status)
    token_response_headers(response)
    return response


@method_decorator(csrf_exempt, name="dispatch")
class IntrospectView(View):
    """RFC 7662: the caller authenticates as a client; foreign or dead tokens are inactive."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> JsonResponse:
        # The same client authentication as the token and revocation endpoints (DOT's
        # validator): throttled, failures counted and audited, never metered as a token.
        oauth_request = OAuthRequest(
            request.build_absolute_uri(),
            http_method="POST",
            body=request.POST.dict(),
            headers={"Authorization": request.headers.get("Authorization", "")},
        )
        state = issuance_attach(oauth_request, Issuance(source_address=client_address(request)))
        try:
            authenticated = AgentRequestValidator().authenticate_client(oauth_request)
        except CustomOAuth2Error as refusal:
            response = oauth_error(
                str(refusal.error), str(refusal.description or ""), refusal.status_code
            )
            if state.retry_after:
                response["Retry-After"] = str(state.retry_after)
            return response
        if not authenticated:
            return oauth_error("invalid_client", "Client authentication failed.", 401)
        client = cast(Client, oauth_request.client)
        token = request.POST.get("token", "")
        if not token:
            return oauth_error("invalid_request", "The token parameter is required.", 400)
        return JsonResponse(token_introspect(client=client, token=token), headers=NO_STORE)


@safe_methods_only
def jwks(request: HttpRequest) -> HttpResponse:
    """The public keys that verify live tokens: every algorithm's next and current key and the
    retired keys whose tokens may still be alive. Relying parties may cache it for
    ``AGENTIDP_JWKS_MAX_AGE``, less than the pre-publication window: a cached copy always
    holds the key that signs next."""
    response = HttpResponse(jwks_document(), content_type="application/json")
    response["Cache-Control"] = f"public, max-age={int(settings.AGENTIDP['JWKS_MAX_AGE'])}"
    return response


@safe_methods_only
def status_list(request: HttpRequest, list_number: int) -> HttpResponse:
    """A token status list (draft-ietf-oauth-status-list): the signed ``statuslist+jwt`` whose
    bit ``idx`` is set when the token whose ``status`` claim names this list and ``idx`` has
    been revoked. Public, cacheable for its ``ttl``."""
    token = status_list_served(list_number)
    if token is None:
        return standard_problem(request, 404, detail="No such status list.")
    response = HttpResponse(token, content_type=STATUS_LIST_MEDIA_TYPE)
    response["Cache-Control"] = f"public, max-age={status_list_ttl()}"
    return response


@safe_methods_only
def hosted_resource_metadata(request: HttpRequest, resource_id: uuid.UUID) -> HttpResponse:
    """The RFC 9728 metadata of a registered resource that asked this deployment to host it
    (``metadata_hosted``): public, for the ``resource_metadata`` of that server's 401s. Any
    other id (unknown, not hosted, another organization's that is not) is a 404."""
    resource = resources.resource_hosted(resource_id)
    if resource is None:
        return standard_problem(request, 404, detail="No hosted metadata for this resource.")
    response = JsonResponse(resources.hosted_metadata(resource))
    response["Access-Control-Allow-Origin"] = "*"
    response["Cache-Control"] = "public, max-age=300"
    return response


@safe_methods_only
def authorization_server_metadata(request: HttpRequest) -> JsonResponse:
    """RFC 8414 metadata, also served as ``/.well-known/openid-configuration``."""
    response = JsonResponse(discovery_document())
    response["Cache-Control"] = "public, max-age=300"
    return response


def _bearer_problem(
    request: HttpRequest, status: int, detail: str, error: str | None = None, scope: str = ""
) -> HttpResponse:
    """An RFC 6750 3.1 refusal: the challenge names the error (none when no token was sent),
    the body is the API's problem document."""
    params = {"error": error} if error else {}
    if scope:
        params["scope"] = scope
    challenge = bearer_challenge(**params)
    return standard_problem(request, status, detail=detail, headers={"WWW-Authenticate": challenge})


@method_decorator(csrf_exempt, name="dispatch")
class AgentInfoView(View):
    """``GET`` and ``POST /agent-info``: the agent-identity equivalent of OpenID Connect
    UserInfo. The access token comes in ``Authorization: Bearer`` or, on POST, as the form's
    ``access_token``; the tenancy middleware has already verified it (an id_token, an expired,
    revoked or forged token is ``invalid_token`` there)."""

    http_method_names = ["get", "post"]

    def get(self, request: HttpRequest) -> HttpResponse:
        return self._answer(request)

    def post(self, request: HttpRequest) -> HttpResponse:
        return self._answer(request)

    def _answer(self, request: HttpRequest) -> HttpResponse:
        if "access_token" in request.GET:
            return _bearer_problem(
                request, 400, "Send the access token in the Authorization header, not the URI.",
                "invalid_request",
            )  # fmt: skip
        scheme = request.headers.get("Authorization", "").split(" ", 1)[0].lower()
        in_header = scheme in ("bearer", "dpop")
        if in_header and request.method == "POST" and "access_token" in request.POST:
            return _bearer_problem(
                request, 400, "Send the access token one way only.", "invalid_request"
            )
        principal = getattr(request, "principal", None)
        if not isinstance(principal, Principal) or principal.kind != "agent":
            return _bearer_problem(request, 401, "An agent's bearer access token is required.")
        if Scope.OPENID not in principal.scopes:
            return _bearer_problem(
                request, 403, "The token was not granted the openid scope.",
                "insufficient_scope", Scope.OPENID,
            )  # fmt: skip
        assert principal.organization_id is not None  # noqa: S101 - every agent token names one
        info = agent_info(
            organization_id=principal.organization_id,
            agent_id=uuid.UUID(principal.id),
            client_id=principal.display,
            scopes=principal.scopes,
            act=principal.act,
        )
        if not info.signed_alg:
            return JsonResponse(info.claims, headers=NO_STORE)
        return HttpResponse(agent_info_jwt(info), content_type="application/jwt", headers=NO_STORE)


class ProtectedResourceMetadataView(OAuthProtectedResourceMetadataView):
    """RFC 9728 metadata of the platform API (the resource ``{issuer}/api``, its tokens'
    audience), built on django-oauth-toolkit's view: this deployment is its authorization
    server, its scopes are the agents', and a bearer token goes in the header only."""

    def get_resource(self, request: HttpRequest) -> str:
        return api_audience()

    def get_authorization_servers(self, request: HttpRequest) -> list[str]:
        return [agentidp_settings().issuer]

    def get_scopes_supported(self) -> list[str]:
        return sorted(str(scope) for scope in AGENT_SCOPES)

    def get_bearer_methods_supported(self) -> list[str]:
        return ["header"]

    def get_resource_name(self) -> str:
        return "AgentIdP API"

    def get_resource_documentation(self) -> str:
        return f"{agentidp_settings().issuer}/api/docs/"

    def get(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        served: HttpResponse = super().get(request, *args, **kwargs)
        document = json.loads(served.content)
        # RFC 9728 2 / RFC 9449 5.1: DPoP-bound tokens are accepted, bearer tokens too
        document["dpop_signing_alg_values_supported"] = list(DPOP_ALGORITHMS)
        document["dpop_bound_access_tokens_required"] = False
        response = JsonResponse(document)
        response["Access-Control-Allow-Origin"] = "*"
        response["Cache-Control"] = "public, max-age=300"
        return response
