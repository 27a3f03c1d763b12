"""The REST API with bearer tokens, and every forged or stale token it must refuse."""

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client as HttpClient
from django.test.utils import CaptureQueriesContext, override_settings
from jwcrypto import jws

from agentidp.conf import agentidp_settings
from agentidp.tenancy import tenant_context
from agents.services import agent_reactivate, agent_suspend
from compliance.models import AuditEvent
from oidc.keys import key_ring
from oidc.revocation import jti_revoke
from organizations.models import Organization
from tests.factories import TEST_ACTOR, AgentFactory, OrganizationFactory
from tests.oidc.conftest import Credentialed, basic, credentialed, jwt_parts, statements


def _metadata() -> str:
    """The platform API's RFC 9728 metadata URL, which every challenge names."""
    return f"{agentidp_settings().issuer}/.well-known/oauth-protected-resource/api"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def call(token: str, path: str = "/agents", method: str = "get", **kwargs: Any) -> Any:
    client = HttpClient()
    return getattr(client, method)(path, headers={"Authorization": f"Bearer {token}"}, **kwargs)


def assert_invalid_token(response: Any) -> None:
    assert response.status_code == 401, response.content
    assert response["WWW-Authenticate"] == (
        f'Bearer realm="agentidp", error="invalid_token", resource_metadata="{_metadata()}"'
    )
    assert response.json()["detail"] == "The access token is invalid."


def sign(claims: dict[str, Any], **header: Any) -> str:
    """A token signed with the deployment's real current key, with chosen header and claims."""
    signing = key_ring.signing()
    assert signing is not None
    protected = {"alg": signing.algorithm, "typ": "at+jwt", "kid": signing.kid, **header}
    token = jws.JWS(json.dumps(claims))
    token.add_signature(signing.key, alg=signing.algorithm, protected=json.dumps(protected))
    compact: str = token.serialize(compact=True)
    return compact


@pytest.fixture
def valid(cred: Credentialed, token_for: Callable[..., str]) -> str:
    return token_for(cred)


@pytest.fixture
def claims(valid: str) -> dict[str, Any]:
    return jwt_parts(valid)[1]


def test_a_valid_token_reads_its_own_organization(
    valid: str, cred: Credentialed, foreign_agent: Any
) -> None:
    response = call(valid)
    assert response.status_code == 200, response.content
    ids = [a["id"] for a in response.json()["results"]]
    assert str(cred.agent.id) in ids and str(foreign_agent.id) not in ids
    assert call(valid, f"/agents/{cred.agent.id}").json()["name"] == cred.agent.name


def test_writes_are_audited_with_the_agent_as_actor(
    valid: str, cred: Credentialed, org: Organization
) -> None:
    response = call(
        valid, "/agents", "post", data={"name": "spawned"}, content_type="application/json"
    )
    assert response.status_code == 201, response.content
    with tenant_context(org.id):
        event = AuditEvent.objects.get(
            organization_id=org.id, subject_id=response.json()["id"], action="agent.created"
        )
    assert (event.actor_type, event.actor_id) == ("agent", str(cred.agent.id))


def test_scopes_are_enforced(org: Organization, token_for: Callable[..., str]) -> None:
    reader = credentialed(org, scopes=["agents:read"])
    token = token_for(reader)
    assert (
        call(
            token, "/agents", "post", data={"name": "x"}, content_type="application/json"
        ).status_code
        == 403
    )
    assert call(token, "/audit").status_code == 403
    assert call(token, "/organizations").status_code == 403


def test_another_organizations_token_finds_nothing_of_ours(
    agent: Any, token_for: Callable[..., str]
) -> None:
    outsider = credentialed(OrganizationFactory(), scopes=["agents:read", "agents:write"])
    token = token_for(outsider)
    assert call(token, f"/agents/{agent.id}").status_code == 404
    response = call(
        token,
        f"/agents/{agent.id}",
        "patch",
        data={"name": "pwned"},
        content_type="application/json",
    )
    assert response.status_code == 404
    response = call(token, f"/agents/{agent.id}/suspend", "post", content_type="application/json")
    assert response.status_code == 404


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_in_any_case(claims: dict[str, Any], alg: str) -> None:
    signing = key_ring.signing()
    assert signing is not None
    header = {"alg": alg, "typ": "at+jwt", "kid": signing.kid}
    forged = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}."
    assert_invalid_token(call(forged))


def test_hs256_signed_with_the_public_key(claims: dict[str, Any]) -> None:
    signing = key_ring.signing()
    assert signing is not None
    public_pem = signing.key.export_to_pem(private_key=False, password=None)
    header = b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": signing.kid}).encode())
    payload = b64(json.dumps(claims).encode())
    mac = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert_invalid_token(call(f"{header}.{payload}.{b64(mac)}"))


def test_tampered_payload(valid: str, claims: dict[str, Any]) -> None:
    header, _, signature = valid.split(".")
    claims["scope"] = "agents:read agents:write audit:read admin:orgs"
    assert_invalid_token(call(f"{header}.{b64(json.dumps(claims).encode())}.{signature}"))


def test_zeroed_es256_signature(valid: str) -> None:
    header, payload, _ = valid.split(".")
    assert_invalid_token(call(f"{header}.{payload}.{b64(bytes(64))}"))


@pytest.mark.parametrize("kid", ["unknown-kid-0123456789", "../../../etc/passwd", "", "a" * 200])
def test_unknown_or_path_like_kid(claims: dict[str, Any], kid: str) -> None:
    assert_invalid_token(call(sign(claims, kid=kid)))


@pytest.mark.parametrize(
    "header",
    [
        {"jku": "https://evil.example/jwks.json"},
        {"x5u": "https://evil.example/cert.pem"},
        {"jwk": {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}},
    ],
)
def test_key_location_headers(claims: dict[str, Any], header: dict[str, Any]) -> None:
    assert_invalid_token(call(sign(claims, **header)))


def test_expired_token(claims: dict[str, Any]) -> None:
    now = int(time.time())
    claims.update(iat=now - 4000, nbf=now - 4000, exp=now - 3000)
    assert_invalid_token(call(sign(claims)))


def test_token_within_leeway_still_works(claims: dict[str, Any]) -> None:
    claims["exp"] = int(time.time()) - 5
    assert call(sign(claims)).status_code == 200


def test_future_nbf(claims: dict[str, Any]) -> None:
    claims["nbf"] = int(time.time()) + 600
    assert_invalid_token(call(sign(claims)))


@pytest.mark.parametrize(
    "times",
    [
        {"exp": 1e308},  # signed with the real key, a float: never issued here
        {"exp": 10**400},
        {"exp": "tomorrow"},
        {"exp": True},
        {"iat": 1.5},
        {"exp_ahead": 31 * 365 * 86400},  # 31 years
        {"exp_ahead": 3600 + 31},  # past the deployment's maximum lifetime and its leeway
        {"iat_ahead": 600},  # issued in the future
    ],
)
def test_lifetimes_no_token_of_ours_has_are_refused(
    claims: dict[str, Any], times: dict[str, Any], cred: Credentialed
) -> None:
    now = int(time.time())
    if "exp_ahead" in times:
        claims.update(iat=now, nbf=now, exp=now + times["exp_ahead"])
    elif "iat_ahead" in times:
        claims.update(iat=now + times["iat_ahead"], exp=now + times["iat_ahead"] + 60)
    else:
        claims.update(times)
    token = sign(claims)
    assert_invalid_token(call(token))
    introspected = HttpClient().post(
        "/oauth2/introspect", {"token": token},
        headers={"Authorization": basic(cred.client_id, cred.secret)},
    )  # fmt: skip
    assert introspected.json() == {"active": False}


def test_a_lifetime_over_the_organizations_is_refused(
    claims: dict[str, Any], cred: Credentialed, org: Organization
) -> None:
    """The organization's tokens live 600 s: a token for 1,800 (under the deployment's 3,600)
    was not issued here either."""
    assert org.access_token_lifetime_seconds == 600
    now = int(time.time())
    claims.update(iat=now, nbf=now, exp=now + 1800)
    assert_invalid_token(call(sign(claims)))
    claims.update(exp=now + 600)
    assert call(sign(claims)).status_code == 200


@pytest.mark.parametrize(
    ("claim", "value"),
    [("iss", "https://evil.example"), ("aud", "https://svc.example"), ("aud", ["x", "y"])],
)
def test_wrong_issuer_or_audience(claims: dict[str, Any], claim: str, value: Any) -> None:
    claims[claim] = value
    assert_invalid_token(call(sign(claims)))


@pytest.mark.parametrize("typ", [None, "JWT", "at+jwt+evil", "id_token"])
def test_missing_or_wrong_typ(claims: dict[str, Any], typ: str | None) -> None:
    signing = key_ring.signing()
    assert signing is not None
    protected: dict[str, Any] = {"alg": signing.algorithm, "kid": signing.kid}
    if typ is not None:
        protected["typ"] = typ
    token = jws.JWS(json.dumps(claims))
    token.add_signature(signing.key, alg=signing.algorithm, protected=json.dumps(protected))
    assert_invalid_token(call(token.serialize(compact=True)))


def test_revoked_jti(valid: str, claims: dict[str, Any]) -> None:
    jti_revoke(claims["jti"], expires_at=claims["exp"])
    assert_invalid_token(call(valid))


def test_token_of_a_suspended_agent(
    valid: str, cred: Credentialed, org: Organization, token_for: Callable[..., str]
) -> None:
    """Suspension ends the agent's tokens for good; after reactivation it asks for new ones."""
    with tenant_context(org.id):
        agent_suspend(actor=TEST_ACTOR, organization_id=org.id, agent_id=cred.agent.id)
    assert_invalid_token(call(valid))
    with tenant_context(org.id):
        agent_reactivate(actor=TEST_ACTOR, organization_id=org.id, agent_id=cred.agent.id)
    assert_invalid_token(call(valid))
    time.sleep(1.01)  # iat has one-second resolution: a token of the next second
    assert call(token_for(cred)).status_code == 200


def test_garbage_tokens(valid: str) -> None:
    for junk in ["", "abc", "a.b", "a.b.c.d", "###.###.###", valid + "x"]:
        assert_invalid_token(call(junk))


def test_foreign_organization_claim_cannot_be_forged(
    claims: dict[str, Any], org: Organization
) -> None:
    other = OrganizationFactory()
    victim = AgentFactory(organization=other)
    header, _, signature = sign(claims).split(".")
    forged = {**claims, "organization_id": str(other.id), "sub": str(victim.id)}
    assert_invalid_token(
        call(f"{header}.{b64(json.dumps(forged).encode())}.{signature}", f"/agents/{victim.id}")
    )


def test_a_signature_in_another_base64_spelling(valid: str) -> None:
    """The same signature bytes, padded or in the standard alphabet, are not the token issued."""
    header, payload, signature = valid.split(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    assert call(valid).status_code == 200
    for spelling in [signature + "=" * (-len(signature) % 4 or 4), base64.b64encode(raw).decode()]:
        if spelling != signature:
            assert_invalid_token(call(f"{header}.{payload}.{spelling}"))


def test_a_bearer_read_costs_two_statements(valid: str, cred: Credentialed) -> None:
    """The hot read path: one statement sets the organization and checks the agent and its
    organization are active, one reads the agent (plus the transaction's BEGIN and COMMIT)."""
    path = f"/agents/{cred.agent.id}"
    assert call(valid, path).status_code == 200
    with CaptureQueriesContext(connection) as queries:
        assert call(valid, path).status_code == 200
    sql = statements(queries)
    assert len(sql) == 2, sql
    assert "set_config('app.organization_id'" in sql[0]
    assert "FROM agents_agent" in sql[1]


def test_a_subject_that_is_not_an_agent_id(claims: dict[str, Any], cred: Credentialed) -> None:
    """Signed by us but naming no agent: refused like any invalid token, never a 500."""
    assert_invalid_token(call(sign({**claims, "sub": "../admin"}), f"/agents/{cred.agent.id}"))


def test_without_the_revocation_list_bearer_tokens_are_refused_not_rejected(
    valid: str, cred: Credentialed
) -> None:
    """Redis down: a revoked token would pass unchecked, so every bearer request is refused, with
    503 and Retry-After (the token may be fine: retry, do not discard it), never 200 or 500."""
    from agentidp.devenv import free_port
    from agentidp.usage import redis_client

    path = f"/agents/{cred.agent.id}"
    assert call(valid, path).status_code == 200
    try:
        with override_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
            redis_client.cache_clear()
            response = call(valid, path)
    finally:
        redis_client.cache_clear()
    assert response.status_code == 503, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert int(response["Retry-After"]) >= 1
    assert cred.agent.name not in response.content.decode()
    assert "WWW-Authenticate" not in response
    assert call(valid, path).status_code == 200
