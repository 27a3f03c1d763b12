"""OpenID Connect: discovery, id_tokens on both token paths, /agent-info, token confusion."""

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
import time_machine
from django.test import Client as HttpClient
from django.test.utils import override_settings
from rest_framework.test import APIClient

from agentidp.conf import agentidp_settings
from agentidp.devenv import free_port
from agentidp.tenancy import platform_context, tenant_context
from agentidp.usage import redis_client
from agents.services import agent_suspend
from compliance.models import AuditEvent
from credentials.services import client_metadata_set
from oidc.keys import key_ring
from oidc.services import signing_key_rotate
from oidc.tokens import InvalidToken, api_audience, id_token_verify
from organizations.models import Organization
from tests.factories import TEST_ACTOR, OrganizationFactory
from tests.oidc.conftest import (
    FORM,
    Credentialed,
    basic,
    credentialed,
    jwt_parts,
    request_token,
)
from tests.oidc.test_bearer import b64

OPENID = ["openid", "profile", "agents:read"]
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k"}


def _metadata() -> str:
    """The platform API's RFC 9728 metadata URL, which every challenge names."""
    return f"{agentidp_settings().issuer}/.well-known/oauth-protected-resource/api"


@pytest.fixture
def oidc_cred(org: Organization) -> Credentialed:
    return credentialed(org, scopes=OPENID, capabilities=["search", "summarize"])


def _tokens(c: Credentialed, **params: Any) -> dict[str, Any]:
    response = request_token(c, **params)
    assert response.status_code == 200, response.content
    body: dict[str, Any] = response.json()
    return body


def _info(token: str, method: str = "get", **kwargs: Any) -> Any:
    client = HttpClient()
    return getattr(client, method)(
        "/agent-info", headers={"Authorization": f"Bearer {token}"}, **kwargs
    )


def _jwks() -> dict[str, Any]:
    document: dict[str, Any] = HttpClient().get("/.well-known/jwks.json").json()
    return document


def _verify(token: str, audience: str, issuer: str) -> dict[str, Any]:
    """PyJWT, with the key the kid names in the JWKS served over HTTP."""
    header = jwt.get_unverified_header(token)
    keys = {key["kid"]: key for key in _jwks()["keys"]}
    claims: dict[str, Any] = jwt.decode(
        token,
        jwt.PyJWK.from_dict(keys[header["kid"]]),
        algorithms=[header["alg"]],
        audience=audience,
        issuer=issuer,
        options={"require": ["exp", "iat", "sub", "aud", "iss"]},
    )
    return claims


# --- discovery --------------------------------------------------------------------------------


def test_discovery_follows_the_openid_connect_discovery_rules(
    oidc_cred: Credentialed, settings: Any
) -> None:
    """The checks the OpenID conformance suite's discovery module applies, field by field."""
    issuer = settings.AGENTIDP["ISSUER"]
    response = HttpClient().get("/.well-known/openid-configuration")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert "max-age" in response["Cache-Control"]
    document = response.json()
    assert document == HttpClient().get("/.well-known/oauth-authorization-server").json()
    assert document["issuer"] == issuer  # exactly the URL it is fetched under, less the path
    for field in (
        "issuer", "token_endpoint", "jwks_uri", "userinfo_endpoint", "response_types_supported",
        "subject_types_supported", "id_token_signing_alg_values_supported", "scopes_supported",
        "claims_supported", "grant_types_supported", "token_endpoint_auth_methods_supported",
        "introspection_endpoint", "revocation_endpoint", "code_challenge_methods_supported",
    ):  # fmt: skip
        assert document.get(field), field
    assert document["userinfo_endpoint"] == f"{issuer}/agent-info"
    assert "openid" in document["scopes_supported"]
    assert document["subject_types_supported"] == ["public"]
    assert "RS256" in document["id_token_signing_alg_values_supported"]
    assert "none" not in document["id_token_signing_alg_values_supported"]
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert {"sub", "iss", "aud", "exp", "iat", "auth_time", "azp"} <= set(
        document["claims_supported"]
    )
    assert {"organization_id", "agent_name", "agent_status", "capabilities"} <= set(
        document["claims_supported"]
    )
    endpoints = [value for key, value in document.items() if key.endswith(("_endpoint", "_uri"))]
    assert len(endpoints) >= 5
    for url in endpoints:
        assert url.startswith(f"{issuer}/"), url
        path = url[len(issuer) :]
        reached = HttpClient().generic("GET" if "jwks" in path else "POST", path)
        assert reached.status_code != 404, path  # routed (401/400/405 without credentials)
    keys = _jwks()["keys"]
    assert {key["alg"] for key in keys} == {"ES256", "RS256", "EdDSA"}
    assert len({key["kid"] for key in keys}) == len(keys)
    for key in keys:
        assert not PRIVATE_MEMBERS & set(key), key["kid"]
        assert key["use"] == "sig"
        expected = {"ES256": ("EC", "P-256"), "RS256": ("RSA", None), "EdDSA": ("OKP", "Ed25519")}
        kty, crv = expected[key["alg"]]
        assert key["kty"] == kty and key.get("crv") == crv
        if kty == "RSA":
            assert len(base64.urlsafe_b64decode(key["n"] + "==")) * 8 >= 2048


# --- id_tokens ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["lean", "full"])
def test_openid_scope_adds_an_id_token_with_the_agents_claims(
    oidc_cred: Credentialed, settings: Any, path: str
) -> None:
    # The full path answers whatever the lean one declines: a resource indicator, for one.
    extra = {"resource": api_audience()} if path == "full" else {}
    body = _tokens(oidc_cred, scope="openid profile", **extra)
    issuer = settings.AGENTIDP["ISSUER"]
    header, _ = jwt_parts(body["id_token"])
    assert header["typ"] == "JWT" and header["alg"] == "RS256"
    claims = _verify(body["id_token"], oidc_cred.client_id, issuer)
    access = jwt_parts(body["access_token"])[1]
    assert claims["sub"] == access["sub"] == str(oidc_cred.agent.id)
    assert claims["aud"] == claims["azp"] == oidc_cred.client_id
    assert claims["iat"] == claims["auth_time"] == access["iat"]
    assert claims["exp"] == access["exp"]
    assert claims["organization_id"] == str(oidc_cred.agent.organization_id)
    assert claims["agent_name"] == oidc_cred.agent.name
    assert claims["agent_status"] == "active"
    assert claims["capabilities"] == ["search", "summarize"]
    assert claims["did"] == oidc_cred.agent.did and claims["did"].startswith("did:web:")
    digest = hashlib.sha256(body["access_token"].encode()).digest()
    assert claims["at_hash"] == b64(digest[:16])
    with tenant_context(oidc_cred.agent.organization_id):
        event = AuditEvent.objects.get(action="token.issued", subject_id=access["jti"])
    assert event.data["id_token"] is True


def test_no_id_token_without_openid(oidc_cred: Credentialed) -> None:
    body = _tokens(oidc_cred, scope="agents:read")
    assert "id_token" not in body
    jti = jwt_parts(body["access_token"])[1]["jti"]
    with tenant_context(oidc_cred.agent.organization_id):
        event = AuditEvent.objects.get(action="token.issued", subject_id=jti)
    assert event.data["id_token"] is False


@pytest.mark.parametrize("extra", [{}, {"resource": "platform"}])
def test_openid_for_a_client_not_allowed_it_is_invalid_scope(
    cred: Credentialed, extra: dict[str, str]
) -> None:
    if extra:
        extra = {"resource": api_audience()}
    response = request_token(cred, scope="openid agents:read", **extra)
    assert response.status_code == 400 and response.json()["error"] == "invalid_scope"


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA", "RS256"])
def test_the_client_chooses_its_id_token_algorithm_through_the_api(
    oidc_cred: Credentialed, client_for: Callable[..., APIClient], staff: Any, algorithm: str,
    settings: Any,
) -> None:  # fmt: skip
    api = client_for(staff)
    path = f"/agents/{oidc_cred.agent.id}/client"
    response = api.patch(path, {"id_token_signed_response_alg": algorithm}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["id_token_signed_response_alg"] == algorithm
    assert api.get(path).json() == response.json()
    for extra in ({}, {"resource": api_audience()}):
        token = _tokens(oidc_cred, scope="openid", **extra)["id_token"]
        assert jwt_parts(token)[0]["alg"] == algorithm
        claims = _verify(token, oidc_cred.client_id, settings.AGENTIDP["ISSUER"])
        assert ("at_hash" in claims) is (algorithm != "EdDSA")


def test_the_client_endpoint_refuses_bad_input_and_other_organizations(
    oidc_cred: Credentialed, client_for: Callable[..., APIClient], staff: Any
) -> None:
    api = client_for(staff)
    path = f"/agents/{oidc_cred.agent.id}/client"
    for body in (
        {"id_token_signed_response_alg": "HS256"},
        {"id_token_signed_response_alg": "none"},
        {"userinfo_signed_response_alg": "RS256\x00"},
        {"client_id": "someone-else"},
        {"id_token_signed_response_alg": ["RS256"]},
        {"id_token_signed_response_alg": {"a": {"b": {"c": "d"}}}},
    ):
        response = api.patch(path, body, format="json")
        assert response.status_code == 400, (body, response.content)
        assert response["Content-Type"] == "application/problem+json"
    assert api.get(path).json()["id_token_signed_response_alg"] == "RS256"
    outsider = credentialed(OrganizationFactory(), scopes=OPENID)
    foreign = f"/agents/{outsider.agent.id}/client"
    assert api.get(foreign).status_code == 404
    response = api.patch(foreign, {"id_token_signed_response_alg": "ES256"}, format="json")
    assert response.status_code == 404


# --- token confusion ----------------------------------------------------------------------------


def test_an_id_token_is_never_a_bearer_token(oidc_cred: Credentialed) -> None:
    id_token = _tokens(oidc_cred, scope="openid agents:read")["id_token"]
    for path in ("/agents", f"/agents/{oidc_cred.agent.id}", "/agent-info"):
        response = HttpClient().get(path, headers={"Authorization": f"Bearer {id_token}"})
        assert response.status_code == 401, path
        assert 'error="invalid_token"' in response["WWW-Authenticate"]
    introspected = HttpClient().post(
        "/oauth2/introspect",
        {"token": id_token},
        headers={"Authorization": basic(oidc_cred.client_id, oidc_cred.secret)},
    )
    assert introspected.json() == {"active": False}


def test_an_access_token_is_never_an_id_token(oidc_cred: Credentialed) -> None:
    body = _tokens(oidc_cred, scope="openid agents:read")
    assert id_token_verify(body["id_token"], client_id=oidc_cred.client_id)["sub"] == str(
        oidc_cred.agent.id
    )
    with pytest.raises(InvalidToken) as refused:
        id_token_verify(body["access_token"], client_id=oidc_cred.client_id)
    assert refused.value.reason == "type"
    with pytest.raises(InvalidToken) as foreign:
        id_token_verify(body["id_token"], client_id="another-client")
    assert foreign.value.reason == "audience"


def _forged_id_token(c: Credentialed, alg: str) -> str:
    claims = {
        "iss": "http://testserver", "sub": str(c.agent.id), "aud": c.client_id,
        "azp": c.client_id, "exp": int(time.time()) + 300, "iat": int(time.time()),
        "auth_time": int(time.time()), "organization_id": str(c.agent.organization_id),
        "client_id": c.client_id, "jti": "x", "scope": "openid",
    }  # fmt: skip
    signing = key_ring.signing("RS256")
    assert signing is not None
    header = {"alg": alg, "typ": "JWT", "kid": signing.kid}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if alg == "none":
        return f"{signing_input}."
    # HS256 keyed with the public key (the classic algorithm confusion attack).
    public = signing.key.export_to_pem().decode()
    mac = hmac.new(public.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


@pytest.mark.parametrize("alg", ["none", "HS256"])
def test_agent_info_refuses_forged_id_tokens(oidc_cred: Credentialed, alg: str) -> None:
    _tokens(oidc_cred, scope="openid")  # the keys exist
    response = _info(_forged_id_token(oidc_cred, alg))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == (
        f'Bearer realm="agentidp", error="invalid_token", resource_metadata="{_metadata()}"'
    )
    assert response["Content-Type"] == "application/problem+json"


# --- /agent-info --------------------------------------------------------------------------------


def test_agent_info_answers_the_agents_claims_by_scope(oidc_cred: Credentialed) -> None:
    full = _tokens(oidc_cred, scope="openid profile")["access_token"]
    response = _info(full)
    assert response.status_code == 200 and response["Cache-Control"].startswith("no-store")
    info = response.json()
    assert info["sub"] == jwt_parts(full)[1]["sub"] == str(oidc_cred.agent.id)
    assert info["organization_id"] == str(oidc_cred.agent.organization_id)
    assert info["did"] == oidc_cred.agent.did
    assert info["agent_name"] == oidc_cred.agent.name and info["agent_status"] == "active"
    assert info["capabilities"] == ["search", "summarize"] and isinstance(info["updated_at"], int)
    assert _info(full, "post").json() == info
    form = HttpClient().post("/agent-info", urlencode({"access_token": full}), FORM)
    assert form.status_code == 200 and form.json() == info
    multipart = HttpClient().post("/agent-info", {"access_token": full})  # RFC 6750 2.2: no
    assert multipart.status_code == 401
    narrow = _tokens(oidc_cred, scope="openid")["access_token"]
    assert set(_info(narrow).json()) == {"sub", "organization_id", "did"}


def test_agent_info_refusals_follow_rfc_6750(
    oidc_cred: Credentialed, django_capture_on_commit_callbacks: Any, staff: Any,
    client_for: Callable[..., APIClient],
) -> None:  # fmt: skip
    missing = HttpClient().get("/agent-info")
    assert missing.status_code == 401
    assert missing["WWW-Authenticate"] == (
        f'Bearer realm="agentidp", resource_metadata="{_metadata()}"'
    )
    assert missing["Content-Type"] == "application/problem+json"
    session = client_for(staff).get("/agent-info")
    assert session.status_code == 401
    no_openid = _tokens(oidc_cred, scope="agents:read")["access_token"]
    refused = _info(no_openid)
    assert refused.status_code == 403
    assert refused["WWW-Authenticate"] == (
        'Bearer realm="agentidp", error="insufficient_scope", scope="openid", '
        f'resource_metadata="{_metadata()}"'
    )
    token = _tokens(oidc_cred, scope="openid")["access_token"]
    in_uri = HttpClient().get(f"/agent-info?access_token={token}")
    assert in_uri.status_code == 400 and 'error="invalid_request"' in in_uri["WWW-Authenticate"]
    twice = HttpClient().post(
        "/agent-info",
        urlencode({"access_token": token}),
        FORM,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert twice.status_code == 400 and 'error="invalid_request"' in twice["WWW-Authenticate"]
    for garbage in ("", "a.b.c", "\x00", "x" * 5000, token + "x"):
        response = HttpClient().post("/agent-info", urlencode({"access_token": garbage}), FORM)
        assert response.status_code in (400, 401), garbage[:10]
    assert HttpClient().put("/agent-info").status_code == 405
    with django_capture_on_commit_callbacks(execute=True):
        HttpClient().post(
            "/oauth2/revoke",
            {"token": token},
            headers={"Authorization": basic(oidc_cred.client_id, oidc_cred.secret)},
        )
    revoked = _info(token)
    assert revoked.status_code == 401 and 'error="invalid_token"' in revoked["WWW-Authenticate"]
    live = _tokens(oidc_cred, scope="openid")["access_token"]
    with (
        tenant_context(oidc_cred.agent.organization_id),
        django_capture_on_commit_callbacks(execute=True),
    ):
        agent_suspend(
            actor=TEST_ACTOR,
            organization_id=oidc_cred.agent.organization_id,
            agent_id=oidc_cred.agent.id,
        )
    assert _info(live).status_code == 401


def test_agent_info_refuses_an_expired_token(oidc_cred: Credentialed) -> None:
    token = _tokens(oidc_cred, scope="openid")["access_token"]
    exp = jwt_parts(token)[1]["exp"]
    with time_machine.travel(exp + 120, tick=False):
        response = _info(token)
    assert response.status_code == 401 and 'error="invalid_token"' in response["WWW-Authenticate"]


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "EdDSA"])
def test_agent_info_as_a_signed_jwt_when_the_client_registered_it(
    oidc_cred: Credentialed, settings: Any, algorithm: str
) -> None:
    organization_id = oidc_cred.agent.organization_id
    with tenant_context(organization_id):
        client_metadata_set(
            actor=TEST_ACTOR,
            organization_id=organization_id,
            agent_id=oidc_cred.agent.id,
            userinfo_signed_response_alg=algorithm,
        )
    token = _tokens(oidc_cred, scope="openid profile")["access_token"]
    response = _info(token)
    assert response.status_code == 200 and response["Content-Type"] == "application/jwt"
    signed = response.content.decode()
    assert jwt_parts(signed)[0]["alg"] == algorithm
    header = jwt.get_unverified_header(signed)
    keys = {key["kid"]: key for key in _jwks()["keys"]}
    claims = jwt.decode(
        signed,
        jwt.PyJWK.from_dict(keys[header["kid"]]),
        algorithms=[algorithm],
        audience=oidc_cred.client_id,
        issuer=settings.AGENTIDP["ISSUER"],
    )
    assert claims["sub"] == str(oidc_cred.agent.id) and claims["agent_name"] == oidc_cred.agent.name
    # Neither an access token nor an id_token (no exp, no auth_time).
    assert _info(signed).status_code == 401
    with pytest.raises(InvalidToken):
        id_token_verify(signed, client_id=oidc_cred.client_id)


def test_with_redis_down_the_jwks_is_served_from_the_database_and_agent_info_is_503(
    oidc_cred: Credentialed, settings: Any
) -> None:
    """The JWKS cache is only a cache, and rotating does not need it; /agent-info needs the
    revocation list, so it refuses with 503 and Retry-After (never 200 for a possibly revoked
    token, never 500)."""
    token = _tokens(oidc_cred, scope="openid")["access_token"]
    served = _jwks()
    later = time.time() + int(settings.AGENTIDP["KEY_PREPUBLISH_SECONDS"]) + 1
    try:
        with override_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
            redis_client.cache_clear()
            jwks = HttpClient().get("/.well-known/jwks.json")
            discovery = HttpClient().get("/.well-known/openid-configuration")
            info = _info(token)
            with time_machine.travel(later, tick=False), platform_context(reason="tests"):
                rotation = signing_key_rotate(actor=TEST_ACTOR)
                after = {key["kid"] for key in _jwks()["keys"]}
    finally:
        redis_client.cache_clear()
    assert jwks.status_code == 200 and jwks.json() == served
    assert discovery.status_code == 200
    assert info.status_code == 503 and int(info["Retry-After"]) >= 1
    assert info["Content-Type"] == "application/problem+json"
    assert {key.kid for key in rotation.activated.values()} <= after
    assert set(rotation.retired.values()) <= after
