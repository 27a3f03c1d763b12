"""django-oauth-toolkit's scopes backend (``SCOPES_BACKEND_CLASS``): the scopes agents may hold,
from the one list of scope names (:class:`organizations.choices.Scope`)."""

from oauthlib.common import Request as OAuthRequest

from credentials.models import Client
from organizations.choices import AGENT_SCOPES, DEFAULT_AGENT_SCOPES, Scope


class AgentScopes:
    """What DOT (and the discovery document) asks about scopes: all scopes an agent may request,
    the client's allowed ones, and the default for a new agent."""

    def get_all_scopes(self) -> dict[str, str]:
        return {scope.value: str(scope.label) for scope in Scope if scope in AGENT_SCOPES}

    def get_available_scopes(
        self, application: Client | None = None, request: OAuthRequest | None = None,
        *args: object, **kwargs: object,
    ) -> list[str]:  # fmt: skip
        return list(application.allowed_scopes) if application else sorted(AGENT_SCOPES)

    def get_default_scopes(
        self, application: Client | None = None, request: OAuthRequest | None = None,
        *args: object, **kwargs: object,
    ) -> list[str]:  # fmt: skip
        return list(application.allowed_scopes) if application else list(DEFAULT_AGENT_SCOPES)
