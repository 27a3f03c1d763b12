"""One list of scope names: django-oauth-toolkit, the discovery document and the scopes API
all report the same ones."""

from typing import Any

from django.test import Client as HttpClient
from oauth2_provider.scopes import get_scopes_backend

from agentidp.tenancy import tenant_context
from credentials.models import Client
from organizations.choices import AGENT_SCOPES, DEFAULT_AGENT_SCOPES, Scope
from tests.oidc.conftest import Credentialed


def test_dot_discovery_and_the_scopes_api_agree(cred: Credentialed, api: Any) -> None:
    backend = get_scopes_backend()
    assert set(backend.get_all_scopes()) == set(AGENT_SCOPES)
    assert Scope.ADMIN_ORGS not in backend.get_all_scopes()
    assert backend.get_default_scopes() == list(DEFAULT_AGENT_SCOPES)
    assert set(backend.get_available_scopes()) == set(AGENT_SCOPES)
    with tenant_context(cred.agent.organization_id):
        client = Client.objects.get(agent_id=cred.agent.id)
    assert backend.get_available_scopes(application=client) == list(client.allowed_scopes)
    assert backend.get_default_scopes(application=client) == list(client.allowed_scopes)

    metadata = HttpClient().get("/.well-known/openid-configuration").json()
    assert metadata["scopes_supported"] == sorted(AGENT_SCOPES)

    refused = api.post(
        f"/agents/{cred.agent.id}/scopes", {"scopes": [Scope.ADMIN_ORGS]}, format="json"
    )
    assert refused.status_code == 400, refused.content
