"""Standard clients against a live server: Authlib obtains a token, PyJWT verifies it."""

import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oidc.core import IDToken
from authlib.oidc.discovery import OpenIDProviderMetadata
from django.conf import settings
from django.test import override_settings
from joserfc import jwt as joserfc_jwt
from joserfc.jwk import KeySet

from oidc.tokens import api_audience
from organizations.models import Organization
from tests.factories import OrganizationFactory
from tests.oidc.conftest import Credentialed, credentialed


@pytest.fixture
def committed(run_in_threads: Callable[..., list[Any]]) -> Credentialed:
    """An agent with credentials, committed so the live server's own connections see it."""
    (result,) = run_in_threads(
        lambda: credentialed(OrganizationFactory(), scopes=["agents:read", "audit:read"])
    )
    assert isinstance(result, Credentialed), result
    return result


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_authlib_token_verified_by_pyjwt_with_the_jwks(
    live_server: Any, committed: Credentialed, method: str, settings: Any
) -> None:
    base = live_server.url
    session = OAuth2Session(
        client_id=committed.client_id,
        client_secret=committed.secret,
        token_endpoint_auth_method=method,
        scope="agents:read",
    )
    token = session.fetch_token(
        f"{base}/oauth2/token", grant_type="client_credentials", resource=api_audience()
    )
    assert token["token_type"].lower() == "bearer" and token["scope"] == "agents:read"

    jwks_client = jwt.PyJWKClient(f"{base}/.well-known/jwks.json")
    access_token = token["access_token"]
    signing_key = jwks_client.get_signing_key_from_jwt(access_token)
    header = jwt.get_unverified_header(access_token)
    assert header["typ"] == "at+jwt"
    claims = jwt.decode(
        access_token,
        signing_key,
        algorithms=["ES256"],
        audience=api_audience(),
        issuer=settings.AGENTIDP["ISSUER"],
        options={"require": ["exp", "iat", "nbf", "jti", "sub", "aud", "iss"]},
    )
    assert claims["sub"] == str(committed.agent.id)
    assert claims["client_id"] == committed.client_id
    assert claims["organization_id"] == str(committed.agent.organization_id)
    assert claims["scope"] == "agents:read"

    metadata = requests.get(f"{base}/.well-known/oauth-authorization-server", timeout=5).json()
    assert metadata["issuer"] == claims["iss"]


def test_api_accepts_the_token_over_http(live_server: Any, committed: Credentialed) -> None:
    base = live_server.url
    session = OAuth2Session(
        client_id=committed.client_id, client_secret=committed.secret, scope="agents:read"
    )
    session.fetch_token(f"{base}/oauth2/token", grant_type="client_credentials")
    response = session.get(f"{base}/agents/{committed.agent.id}", timeout=5)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == str(committed.agent.id)
    assert session.get(f"{base}/audit", timeout=5).status_code == 403  # scope not requested


def test_consecutive_requests_in_one_thread_each_set_their_organization(
    committed: Credentialed, run_in_threads: Callable[..., list[Any]]
) -> None:
    """Like a gunicorn sync worker: one thread, one request after another, each in its own
    committed transaction. The organization must be set again every time, never assumed from
    what the previous request set."""
    from django.test import Client as HttpClient

    from organizations.choices import MemberRole
    from tests.factories import StaffFactory
    from tests.oidc.conftest import request_token

    organization = Organization(id=committed.agent.organization_id)
    (staff,) = run_in_threads(
        lambda: StaffFactory(organization=organization, role=MemberRole.OWNER)
    )
    path = f"/agents/{committed.agent.id}"

    def serve() -> list[int]:
        token = request_token(committed).json()["access_token"]
        bearer = HttpClient(headers={"Authorization": f"Bearer {token}"})
        session = HttpClient()
        session.force_login(staff)
        # a session request after a bearer one: its resolver sets no organization itself
        return [
            bearer.get(path).status_code,
            session.get(path).status_code,
            bearer.get(path).status_code,
            session.get(path).status_code,
        ]

    (statuses,) = run_in_threads(serve)
    assert statuses == [200, 200, 200, 200]


def test_an_openid_connect_relying_party_needs_only_the_issuer_url(
    live_server: Any, run_in_threads: Callable[..., list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Authlib as an off-the-shelf relying party: discovery validated by its OIDC Discovery
    model, client_credentials through its OAuth 2.0 client, the id_token verified with joserfc
    (an independent JOSE library) against the JWKS fetched over HTTP and checked by Authlib's
    ID Token rules, then /agent-info."""
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # the live server speaks plain HTTP
    (agent,) = run_in_threads(
        lambda: credentialed(
            OrganizationFactory(), scopes=["openid", "profile", "agents:read"],
            capabilities=["search"],
        )
    )  # fmt: skip
    assert isinstance(agent, Credentialed)
    issuer = live_server.url
    with override_settings(AGENTIDP={**settings.AGENTIDP, "ISSUER": issuer}):
        discovered = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=5)
        metadata = OpenIDProviderMetadata(discovered.json())
        metadata.validate()
        assert metadata["issuer"] == issuer

        session = OAuth2Session(
            client_id=agent.client_id, client_secret=agent.secret, scope="openid profile"
        )
        token = session.fetch_token(metadata["token_endpoint"], grant_type="client_credentials")
        keys = KeySet.import_key_set(requests.get(metadata["jwks_uri"], timeout=5).json())
        decoded = joserfc_jwt.decode(
            token["id_token"], keys, algorithms=metadata["id_token_signing_alg_values_supported"]
        )
        assert decoded.header["typ"] == "JWT" and decoded.header["alg"] == "RS256"
        claims = IDToken(
            decoded.claims,
            decoded.header,
            {"iss": {"essential": True, "value": issuer}},
            {"client_id": agent.client_id, "access_token": token["access_token"]},
        )
        claims.validate(now=int(time.time()))  # iss, aud, azp, exp, iat, auth_time, at_hash
        assert claims["sub"] == str(agent.agent.id) and claims["capabilities"] == ["search"]

        info = session.get(metadata["userinfo_endpoint"], timeout=5)
        assert info.status_code == 200, info.text
        assert info.json()["sub"] == claims["sub"]
        assert info.json()["agent_name"] == agent.agent.name
