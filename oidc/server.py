"""oauthlib's ``client_credentials`` server with each organization's token lifetime
(``OAUTH2_SERVER_CLASS``)."""

from typing import cast

from oauthlib.common import Request as OAuthRequest
from oauthlib.oauth2 import BackendApplicationServer

from credentials.models import Client
from oidc.tokens import lifetime_capped
from oidc.validators import AgentRequestValidator


def access_token_lifetime(request: OAuthRequest) -> int:
    """The client's organization's lifetime, capped by ``AGENTIDP_ACCESS_TOKEN_MAX_LIFETIME``."""
    client = cast(Client, request.client)
    return lifetime_capped(client.organization.access_token_lifetime_seconds)


class AgentTokenServer(BackendApplicationServer):
    """Every grant but ``client_credentials`` is ``unsupported_grant_type``."""

    def __init__(
        self, request_validator: AgentRequestValidator, *args: object, **kwargs: object
    ) -> None:
        kwargs["token_expires_in"] = access_token_lifetime
        super().__init__(request_validator, *args, **kwargs)  # type: ignore[arg-type]
