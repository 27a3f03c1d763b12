"""Revocation (RFC 7009), introspection (RFC 7662), JWKS, discovery (RFC 8414), key rotation."""

from collections.abc import Callable
from typing import Any

from django.test import Client as HttpClient

from agentidp.tenancy import platform_context, tenant_context
from compliance.models import AuditEvent
from oidc.tokens import api_audience
from organizations.models import Organization
from tests.factories import OrganizationFactory
from tests.oidc.conftest import Credentialed, basic, credentialed, jwt_parts
from tests.oidc.test_bearer import assert_invalid_token, call


def _post(path: str, c: Credentialed, **data: str) -> Any:
    return HttpClient().post(path, data, headers={"Authorization": basic(c.client_id, c.secret)})


def test_revocation_stops_the_token(
    cred: Credentialed, org: Organization, token_for: Callable[..., str],
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    token = token_for(cred)
    assert call(token).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        response = _post("/oauth2/revoke", cred, token=token, token_type_hint="access_token")
    assert response.status_code == 200
    assert_invalid_token(call(token))
    jti = jwt_parts(token)[1]["jti"]
    with tenant_context(org.id):
        assert AuditEvent.objects.filter(action="token.revoked", subject_id=jti).exists()
    introspected = _post("/oauth2/introspect", cred, token=token).json()
    assert introspected == {"active": False}


def test_a_client_cannot_revoke_another_clients_token(
    org: Organization, token_for: Callable[..., str], django_capture_on_commit_callbacks: Any
) -> None:
    owner, other = credentialed(org), credentialed(org)
    token = token_for(owner)
    with django_capture_on_commit_callbacks(execute=True):
        assert _post("/oauth2/revoke", other, token=token).status_code == 200
    assert call(token).status_code == 200


def test_revocation_requires_client_authentication(cred: Credentialed) -> None:
    response = HttpClient().post("/oauth2/revoke", {"token": "x"})
    assert response.status_code == 401


def test_introspection(cred: Credentialed, token_for: Callable[..., str]) -> None:
    token = token_for(cred, resource=api_audience())
    body = _post("/oauth2/introspect", cred, token=token).json()
    assert body["active"] is True
    assert body["sub"] == str(cred.agent.id) and body["aud"] == api_audience()
    assert body["client_id"] == cred.client_id and body["token_type"] == "Bearer"
    assert _post("/oauth2/introspect", cred, token="garbage").json() == {"active": False}
    missing = _post("/oauth2/introspect", cred)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"


def test_introspecting_another_organizations_token_is_inactive(
    cred: Credentialed, token_for: Callable[..., str]
) -> None:
    outsider = credentialed(OrganizationFactory())
    token = token_for(outsider)
    assert _post("/oauth2/introspect", cred, token=token).json() == {"active": False}


def test_introspection_with_bad_client_credentials_is_401(cred: Credentialed) -> None:
    response = HttpClient().post(
        "/oauth2/introspect", {"token": "x"}, headers={"Authorization": basic(cred.client_id, "no")}
    )
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def test_jwks_publishes_public_keys_only(cred: Credentialed, token_for: Callable[..., str]) -> None:
    token = token_for(cred)
    response = HttpClient().get("/.well-known/jwks.json")
    assert response.status_code == 200
    keys = response.json()["keys"]
    kid = jwt_parts(token)[0]["kid"]
    assert kid in {k["kid"] for k in keys}
    for key in keys:
        assert key["use"] == "sig" and key["alg"] in {"ES256", "RS256", "EdDSA"}
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key), "private material published"


def test_discovery_issuer_matches_tokens(cred: Credentialed, token_for: Callable[..., str]) -> None:
    iss = jwt_parts(token_for(cred))[1]["iss"]
    for path in ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]:
        document = HttpClient().get(path).json()
        assert document["issuer"] == iss
        assert document["token_endpoint"] == f"{iss}/oauth2/token"
        assert document["jwks_uri"] == f"{iss}/.well-known/jwks.json"
        # client_credentials for agents; a partner's assertion (federation) by either grant
        assert document["grant_types_supported"] == [
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ]
        assert "client_secret_basic" in document["token_endpoint_auth_methods_supported"]


def test_revoking_in_the_admin_stops_the_token(
    superuser: Any, cred: Credentialed, token_for: Callable[..., str],
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    from oidc.models import AccessToken

    token = token_for(cred)
    jti = jwt_parts(token)[1]["jti"]
    client = HttpClient()
    client.force_login(superuser)
    page = client.get("/admin/oidc/accesstoken/").content.decode()
    assert jti in page and token not in page  # metadata only, never the token
    with platform_context(reason="tests"):
        pk = AccessToken.objects.get(jti=jti).pk
    action = {"action": "revoke", "_selected_action": [pk]}
    asked = client.post("/admin/oidc/accesstoken/", action).content.decode()
    assert "Revokes 1 token of 1 agent, 1 of them still live" in asked
    assert call(token).status_code == 200  # nothing before the answer
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/admin/oidc/accesstoken/", {**action, "confirmed": "yes"}, follow=True
        )
    assert "Revoked 1" in response.content.decode()
    assert_invalid_token(call(token))
    clients_page = client.get("/admin/credentials/client/").content.decode()
    assert cred.client_id in clients_page and cred.secret not in clients_page
