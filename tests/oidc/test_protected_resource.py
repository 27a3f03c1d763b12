"""RFC 9728 discovery of the platform API: a 401 names its metadata document, and the
document names this deployment as the authorization server, so a client that knows only an
API URL finds where to get a token (as MCP clients do)."""

import re

import pytest
from django.test import Client as HttpClient

from agentidp.conf import agentidp_settings
from oidc.tokens import api_audience
from organizations.choices import AGENT_SCOPES
from tests.oidc.conftest import Credentialed, claims, request_token

pytestmark = pytest.mark.django_db


def _resource_metadata(challenge: str) -> str:
    found = re.search(r'resource_metadata="([^"]+)"', challenge)
    assert found, challenge
    return found.group(1)


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/agents", {}),
        ("/agents", {"Authorization": "Bearer not.a.token"}),
        ("/resources", {}),
        ("/agent-info", {}),
    ],
)
def test_every_401_names_the_apis_metadata_which_leads_to_a_token(
    cred: Credentialed, path: str, headers: dict[str, str]
) -> None:
    refused = HttpClient().get(path, headers=headers)
    assert refused.status_code == 401
    url = _resource_metadata(refused["WWW-Authenticate"])
    issuer = agentidp_settings().issuer
    assert url == f"{issuer}/.well-known/oauth-protected-resource/api"
    document = HttpClient().get(url.removeprefix(issuer)).json()
    # RFC 9728 3.3: the resource the document describes is the one its URL derives from
    assert document["resource"] == api_audience() == f"{issuer}/api"
    assert document["authorization_servers"] == [issuer]
    assert document["bearer_methods_supported"] == ["header"]
    assert set(document["scopes_supported"]) == {str(s) for s in AGENT_SCOPES}
    server = HttpClient().get("/.well-known/oauth-authorization-server").json()
    assert server["issuer"] == document["authorization_servers"][0]
    token = request_token(cred, resource=document["resource"], scope="agents:read")
    assert token.status_code == 200, token.content
    assert claims(token.json()["access_token"])["aud"] == document["resource"]
    listed = HttpClient().get(
        "/agents", headers={"Authorization": f"Bearer {token.json()['access_token']}"}
    )
    assert listed.status_code == 200


def test_the_bare_well_known_path_serves_the_same_document() -> None:
    bare = HttpClient().get("/.well-known/oauth-protected-resource")
    assert bare.status_code == 200
    assert bare["Access-Control-Allow-Origin"] == "*"
    assert bare.json() == HttpClient().get("/.well-known/oauth-protected-resource/api").json()


def test_the_metadata_is_read_only() -> None:
    response = HttpClient().post("/.well-known/oauth-protected-resource/api", {})
    assert response.status_code == 405
