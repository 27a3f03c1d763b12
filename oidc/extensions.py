"""Extension points of the authorization server for the apps built on it (federation).

``oidc`` knows nothing of the apps above it; they register here, from their ``apps.py``:

* a grant type the token endpoint answers with a handler of its own (RFC 7523's JWT bearer
  grant, RFC 8693 token exchange), ahead of django-oauth-toolkit's ``client_credentials``;
* the standing of *delegated* access tokens: tokens this deployment signed for a principal
  that is not one of its agents (a partner's agent, through an exchange). They carry the
  :data:`DELEGATION_CLAIM`; the bearer path and introspection ask the registered resolver
  whether such a token may be used now, and as whom.
"""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from agentidp.principals import Principal
from oidc.tokens import VerifiedToken

GrantHandler = Callable[[HttpRequest], HttpResponse]
# The principal a delegated token stands for, or why it may not be used now.
DelegatedResolver = Callable[[VerifiedToken], Principal | str]

DELEGATION_CLAIM = "federation"
"""The claim that marks a delegated token (it names the partner the principal came from)."""

_grants: dict[str, GrantHandler] = {}
_delegated: list[DelegatedResolver] = []


def grant_type_register(grant_type: str, handler: GrantHandler) -> None:
    """Answer ``grant_type`` at the token endpoint with ``handler`` (one handler a type)."""
    _grants[grant_type] = handler


def grant_type_handler(grant_type: str) -> GrantHandler | None:
    return _grants.get(grant_type)


def grant_types_extra() -> list[str]:
    """The registered grant types, for the discovery document."""
    return sorted(_grants)


def delegated_resolver_register(resolver: DelegatedResolver) -> None:
    """The resolver of delegated tokens (one; registering again replaces it)."""
    _delegated[:] = [resolver]


def is_delegated(verified: VerifiedToken) -> bool:
    return DELEGATION_CLAIM in verified.claims


def delegated_principal(verified: VerifiedToken) -> Principal | str:
    """The principal of a delegated token, or why it may not be used (no resolver installed:
    such a token is not one this deployment accepts)."""
    if not _delegated:
        return "claims"
    return _delegated[0](verified)
