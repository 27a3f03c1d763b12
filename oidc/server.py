"""oauthlib's ``client_credentials`` server with each organization's token lifetime, and
token exchange between the organization's agents (``oidc.delegation``) beside it
(``OAUTH2_SERVER_CLASS``)."""

import time
from typing import cast

from oauthlib.common import Request as OAuthRequest
from oauthlib.oauth2 import BackendApplicationServer

from credentials.models import Client
from oidc.delegation import TokenExchangeGrant
from oidc.tokens import TOKEN_EXCHANGE, issuance, lifetime_capped
from oidc.validators import AgentRequestValidator


def access_token_lifetime(request: OAuthRequest) -> int:
    """The client's organization's lifetime, capped by ``AGENTIDP_ACCESS_TOKEN_MAX_LIFETIME``;
    a registered resource's token by the resource's shorter one, a delegated token's by its
    subject token's remaining life too."""
    client = cast(Client, request.client)
    lifetime = lifetime_capped(client.organization.access_token_lifetime_seconds)
    state = issuance(request)
    if state.target is not None and state.target.lifetime:
        lifetime = min(lifetime, state.target.lifetime)
    delegation = state.delegation
    if delegation is not None:
        lifetime = min(lifetime, delegation.expires_at - int(time.time()))
    return lifetime


class AgentTokenServer(BackendApplicationServer):
    """``client_credentials`` and token exchange between local agents; every other grant is
    ``unsupported_grant_type``."""

    def __init__(
        self, request_validator: AgentRequestValidator, *args: object, **kwargs: object
    ) -> None:
        kwargs["token_expires_in"] = access_token_lifetime
        super().__init__(request_validator, *args, **kwargs)  # type: ignore[arg-type]
        self.grant_types[TOKEN_EXCHANGE] = TokenExchangeGrant(request_validator)
