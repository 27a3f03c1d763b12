"""Django middleware and a view decorator accepting AgentIdP access tokens.

settings.py::

    MIDDLEWARE = [..., "agentidp_verifier.django.AgentIdPMiddleware"]
    AGENTIDP_VERIFIER = {"issuer": "https://idp.example.com", "audience": "https://api.example.com"}

views.py::

    @token_required("orders:read")
    def orders(request): ...  # request.agentidp_token is the VerifiedToken

A request with an ``Authorization`` header has it verified by the middleware (a bad token is
answered 401 there); one without passes with ``request.agentidp_token = None``, and
:func:`token_required` refuses it with the challenge. Any key of ``AGENTIDP_VERIFIER`` other
than issuer and audience is a :class:`~agentidp_verifier.Verifier` keyword argument.
"""

import functools
import json
from collections.abc import Callable
from typing import Concatenate, ParamSpec, cast

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse

from agentidp_verifier.errors import (
    InsufficientScope,
    TokenMissing,
    TokenRejected,
    VerifierUnavailable,
)
from agentidp_verifier.verifier import VerifiedToken, Verifier

P = ParamSpec("P")
View = Callable[Concatenate[HttpRequest, P], HttpResponse]
_verifier: Verifier | None = None


def verifier() -> Verifier:
    """The process's verifier, built from ``settings.AGENTIDP_VERIFIER`` on first use."""
    global _verifier
    if _verifier is None:
        # django-stubs knows only Django's own settings
        config = dict(cast(dict[str, object], getattr(settings, "AGENTIDP_VERIFIER")))  # noqa: B009
        issuer, audience = str(config.pop("issuer")), str(config.pop("audience"))
        _verifier = Verifier(issuer, audience, **config)  # type: ignore[arg-type]
    return _verifier


@receiver(setting_changed)
def _settings_changed(setting: str, **kwargs: object) -> None:
    global _verifier
    if setting == "AGENTIDP_VERIFIER":
        _verifier = None


def refusal(rejected: TokenRejected) -> HttpResponse:
    body = {"error": rejected.error or "invalid_token", "error_description": rejected.description}
    response = HttpResponse(
        json.dumps(body), status=rejected.status, content_type="application/json"
    )
    response["WWW-Authenticate"] = ", ".join(verifier().challenges(rejected))
    response["Cache-Control"] = "no-store"
    return response


def unavailable() -> HttpResponse:
    body = {"error": "temporarily_unavailable", "error_description": "the authorization server cannot be reached"}  # fmt: skip
    response = HttpResponse(json.dumps(body), status=503, content_type="application/json")
    response["Retry-After"] = "5"
    return response


class AgentIdPMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.agentidp_token = None  # type: ignore[attr-defined]
        authorization = request.headers.get("Authorization")
        if authorization:
            try:
                token = verifier().verify_request(
                    authorization,
                    dpop_proof=request.headers.get("DPoP"),
                    method=request.method or "GET",
                    url=request.build_absolute_uri(request.path),
                )
            except TokenMissing:
                token = None  # another scheme (Basic, ...): the view decides
            except TokenRejected as rejected:
                return refusal(rejected)
            except VerifierUnavailable:
                return unavailable()
            request.agentidp_token = token  # type: ignore[attr-defined]
        return self.get_response(request)


def token_required(*scopes: str) -> Callable[[View[P]], View[P]]:
    """The view answers only requests whose token the middleware accepted and that holds
    ``scopes``."""

    def decorate(view: View[P]) -> View[P]:
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args: P.args, **kwargs: P.kwargs) -> HttpResponse:
            token: VerifiedToken | None = getattr(request, "agentidp_token", None)
            if token is None:
                return refusal(TokenMissing())
            missing = frozenset(scopes) - token.scopes
            if missing:
                scheme = "DPoP" if token.key_thumbprint else "Bearer"
                return refusal(InsufficientScope(missing, scheme=scheme))
            return view(request, *args, **kwargs)

        return cast(View[P], wrapped)

    return decorate
