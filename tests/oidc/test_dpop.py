"""DPoP (RFC 9449): tokens bound to the client's key at the token endpoint, accepted by the API
only with a fresh proof of that key, and every way of forging, reusing or stripping a proof
refused. Proofs are signed with joserfc, a JOSE library independent of ours."""

import base64
import hashlib
import json
import time
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
import time_machine
from django.test import Client as HttpClient
from django.utils import timezone
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey
from rest_framework.test import APIClient

from agentidp.conf import agentidp_settings
from agentidp.tenancy import tenant_context
from compliance.models import AuditEvent
from organizations.models import Organization
from tests.oidc.conftest import FORM, Credentialed, basic, claims, credentialed

pytestmark = pytest.mark.django_db

Key = ECKey | RSAKey | OKPKey
TOKEN_PATH = "/oauth2/token"


def url(path: str) -> str:
    return f"{agentidp_settings().issuer}{path}"


def proof(
    key: Key, method: str = "POST", path: str = TOKEN_PATH, *, nonce: str | None = None,
    token: str | None = None, alg: str | None = None, header: dict[str, Any] | None = None,
    **overrides: Any,
) -> str:  # fmt: skip
    body: dict[str, Any] = {"jti": str(uuid.uuid4()), "htm": method, "htu": url(path),
                            "iat": int(time.time())}  # fmt: skip
    if nonce is not None:
        body["nonce"] = nonce
    if token is not None:
        digest = hashlib.sha256(token.encode()).digest()
        body["ath"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    body.update(overrides)
    body = {k: v for k, v in body.items() if v is not None}
    alg = alg or {"EC": "ES256", "OKP": "EdDSA", "RSA": "PS256"}[key.key_type]
    protected = {"typ": "dpop+jwt", "alg": alg, "jwk": key.as_dict(private=False),
                 **(header or {})}  # fmt: skip
    return jwt.encode(protected, body, key, algorithms=[alg])


def token_request(c: Credentialed, dpop: str | None, **params: str) -> Any:
    headers = {"Authorization": basic(c.client_id, c.secret)}
    if dpop is not None:
        headers["DPoP"] = dpop
    form = urlencode({"grant_type": "client_credentials", **params})
    return HttpClient().post(TOKEN_PATH, form, FORM, headers=headers)


def nonce_of(c: Credentialed, key: Key) -> str:
    """The server nonce, as a client learns it: its first proof is answered use_dpop_nonce."""
    answer = token_request(c, proof(key))
    assert answer.status_code == 400, answer.content
    assert answer.json()["error"] == "use_dpop_nonce"
    nonce: str = answer["DPoP-Nonce"]
    return nonce


def bound_token(c: Credentialed, key: Key, **params: str) -> tuple[str, str]:
    """A DPoP-bound token and the nonce it was issued with."""
    nonce = nonce_of(c, key)
    answer = token_request(c, proof(key, nonce=nonce), **params)
    assert answer.status_code == 200, answer.content
    return str(answer.json()["access_token"]), nonce


def api_get(path: str, *, auth: str, dpop: str | None = None) -> Any:
    headers = {"Authorization": auth, **({"DPoP": dpop} if dpop else {})}
    return HttpClient().get(path, headers=headers)


def dpop_refused(answer: Any, error: str = "invalid_dpop_proof") -> None:
    assert answer.status_code == 400, answer.content
    assert answer.json()["error"] == error
    assert answer["DPoP-Nonce"]  # a nonce to try again with


def challenged(answer: Any, error: str) -> str:
    assert answer.status_code == 401, answer.content
    challenge: str = answer["WWW-Authenticate"]
    assert challenge.startswith("DPoP ") and f'error="{error}"' in challenge, challenge
    assert 'algs="ES256 EdDSA PS256 RS256"' in challenge
    return challenge


def refusals(org: Organization) -> list[str]:
    with tenant_context(org.id):
        return [e.data["reason"] for e in AuditEvent.objects.filter(action="token.dpop_refused")]


def test_a_bound_token_is_issued_after_the_nonce_challenge_and_used_with_proofs(
    org: Organization, cred: Credentialed
) -> None:
    key = ECKey.generate_key("P-256")
    nonce = nonce_of(cred, key)
    answer = token_request(cred, proof(key, nonce=nonce), scope="agents:read")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["token_type"] == "DPoP"
    assert answer["DPoP-Nonce"]
    issued = claims(body["access_token"])
    assert issued["cnf"] == {"jkt": key.thumbprint()}
    token = body["access_token"]
    # the API: the token under the DPoP scheme, a proof of its key for this request and token
    listed = api_get(
        "/agents", auth=f"DPoP {token}", dpop=proof(key, "GET", "/agents", nonce=nonce, token=token)
    )
    assert listed.status_code == 200, listed.content
    assert [a["id"] for a in listed.json()["results"]] == [str(cred.agent.id)]
    # a nonce challenge is the protocol at work, not an attack: nothing audited
    assert refusals(org) == []


def test_the_api_refuses_every_misuse_of_a_bound_token(cred: Credentialed) -> None:
    key = ECKey.generate_key("P-256")
    token, nonce = bound_token(cred, key, scope="agents:read")
    # a stolen bound token is useless as a bearer token
    as_bearer = api_get("/agents", auth=f"Bearer {token}")
    challenged(as_bearer, "invalid_token")
    # ... and with no proof, or a proof of another key
    challenged(api_get("/agents", auth=f"DPoP {token}"), "invalid_dpop_proof")
    thief = ECKey.generate_key("P-256")
    stolen = proof(thief, "GET", "/agents", nonce=nonce, token=token)
    challenged(api_get("/agents", auth=f"DPoP {token}", dpop=stolen), "invalid_dpop_proof")
    # the proof must name this request and this token
    for wrong in (
        proof(key, "POST", "/agents", nonce=nonce, token=token),
        proof(key, "GET", "/audit", nonce=nonce, token=token),
        proof(key, "GET", "/agents", nonce=nonce, token=token + "x"),
        proof(key, "GET", "/agents", nonce=nonce),  # no ath
        proof(key, "GET", "/agents", nonce=nonce, token=token, iat=int(time.time()) - 3600),
        proof(key, "GET", "/agents", nonce=nonce, token=token, header={"typ": "JWT"}),
    ):
        challenged(api_get("/agents", auth=f"DPoP {token}", dpop=wrong), "invalid_dpop_proof")
    # a proof is good once
    good = proof(key, "GET", "/agents", nonce=nonce, token=token)
    assert api_get("/agents", auth=f"DPoP {token}", dpop=good).status_code == 200
    challenged(api_get("/agents", auth=f"DPoP {token}", dpop=good), "invalid_dpop_proof")
    # a proof without the nonce: the answer carries one
    missing = api_get("/agents", auth=f"DPoP {token}",
                      dpop=proof(key, "GET", "/agents", token=token))  # fmt: skip
    challenged(missing, "use_dpop_nonce")
    assert missing["DPoP-Nonce"]
    assert missing["Content-Type"].startswith("application/problem+json")


def test_a_bearer_token_is_refused_under_the_dpop_scheme(cred: Credentialed) -> None:
    answer = token_request(cred, None, scope="agents:read")
    assert answer.json()["token_type"] == "Bearer"
    token = answer.json()["access_token"]
    assert "cnf" not in claims(token)
    key = ECKey.generate_key("P-256")
    nonce = nonce_of(cred, key)
    dpop = proof(key, "GET", "/agents", nonce=nonce, token=token)
    challenged(api_get("/agents", auth=f"DPoP {token}", dpop=dpop), "invalid_token")
    assert api_get("/agents", auth=f"Bearer {token}").status_code == 200


def test_the_nonce_expires_and_a_fresh_one_is_handed_out(
    org: Organization, cred: Credentialed
) -> None:
    with tenant_context(org.id):
        Organization.objects.filter(id=org.id).update(access_token_lifetime_seconds=3600)
    key = ECKey.generate_key("P-256")
    token, nonce = bound_token(cred, key, scope="agents:read")
    with time_machine.travel(timezone.now() + timedelta(minutes=11)):
        stale = api_get("/agents", auth=f"DPoP {token}",
                        dpop=proof(key, "GET", "/agents", nonce=nonce, token=token))  # fmt: skip
        challenged(stale, "use_dpop_nonce")
        fresh = stale["DPoP-Nonce"]
        assert fresh != nonce
        again = api_get("/agents", auth=f"DPoP {token}",
                        dpop=proof(key, "GET", "/agents", nonce=fresh, token=token))  # fmt: skip
        assert again.status_code == 200, again.content
    # a nonce is the deployment's own: made up, it is refused
    forged = base64.urlsafe_b64encode(b"\0" * 24).rstrip(b"=").decode()
    dpop_refused(token_request(cred, proof(key, nonce=forged)), "use_dpop_nonce")


@pytest.mark.parametrize("kind", ["EC", "OKP", "RSA"])
def test_every_allowed_key_type(cred: Credentialed, kind: str) -> None:
    key: Key
    if kind == "EC":
        key, alg = ECKey.generate_key("P-256"), "ES256"
    elif kind == "OKP":
        key, alg = OKPKey.generate_key("Ed25519"), "EdDSA"
    else:
        key, alg = RSAKey.generate_key(2048), "PS256"
    nonce = nonce_of(cred, key)
    answer = token_request(cred, proof(key, nonce=nonce, alg=alg))
    assert answer.status_code == 200, answer.content
    assert claims(answer.json()["access_token"])["cnf"]["jkt"] == key.thumbprint()


def _unsigned(header: dict[str, Any], body: dict[str, Any], signature: str = "") -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(body)}.{signature}"


def test_forged_proofs_are_refused_at_the_token_endpoint_and_audited(
    org: Organization, cred: Credentialed
) -> None:
    key = ECKey.generate_key("P-256")
    nonce = nonce_of(cred, key)
    public = key.as_dict(private=False)
    now = int(time.time())
    body = {"jti": "j", "htm": "POST", "htu": url(TOKEN_PATH), "iat": now, "nonce": nonce}
    other = ECKey.generate_key("P-256")
    forged = {
        # alg none, and HMAC keyed with the public key
        "algorithm": _unsigned({"typ": "dpop+jwt", "alg": "none", "jwk": public}, body, "x"),
        "algorithm_hs": jwt.encode(
            {"typ": "dpop+jwt", "alg": "HS256", "jwk": public},
            body,
            OctKey.import_key(b"k" * 32),
            algorithms=["HS256"],
        ),
        # the header names one key, another signed
        "signature": jwt.encode(
            {"typ": "dpop+jwt", "alg": "ES256", "jwk": public}, body, other, algorithms=["ES256"]
        ),  # fmt: skip
        # a private key in the header, a key by reference
        "key": proof(key, nonce=nonce, header={"jwk": key.as_dict(private=True)}),
        "header": proof(key, nonce=nonce, header={"jku": "https://evil.example/jwks"}),
        "type": proof(key, nonce=nonce, header={"typ": "JWT"}),
        "htm": proof(key, "GET", nonce=nonce),
        "htu": proof(key, path="/oauth2/introspect", nonce=nonce),
        "iat": proof(key, nonce=nonce, iat=now + 3600),
        "jti": proof(key, nonce=nonce, jti=None),
        "malformed": "not-a-jwt",
        "multiple": f"{proof(key, nonce=nonce)}, {proof(key, nonce=nonce)}",
    }
    for reason, dpop in forged.items():
        answer = token_request(cred, dpop)
        dpop_refused(answer)
        assert reason.split("_")[0] in refusals(org)[-1], (reason, refusals(org))
    # spent once, refused after
    once = proof(key, nonce=nonce)
    assert token_request(cred, once).status_code == 200
    dpop_refused(token_request(cred, once))
    assert refusals(org)[-1] == "replayed"


def test_a_resource_that_requires_dpop_gets_bound_tokens_only(
    org: Organization, api: APIClient
) -> None:
    agent = credentialed(org, ["agents:read"])
    resource = api.post(
        "/resources",
        {"identifier": "https://tools.example.com/mcp", "name": "Tools",
         "scopes": [{"name": "tools:call", "description": "Call tools"}], "dpop_required": True},
        format="json",
    )  # fmt: skip
    assert resource.status_code == 201, resource.content
    rid = resource.json()["id"]
    granted = api.put(f"/resources/{rid}/grants/{agent.agent.id}", {"scopes": ["tools:call"]},
                      format="json")  # fmt: skip
    assert granted.status_code == 200, granted.content
    target = "https://tools.example.com/mcp"
    bare = token_request(agent, None, resource=target)
    dpop_refused(bare)
    assert refusals(org)[-1] == "missing"
    key = ECKey.generate_key("P-256")
    token, _ = bound_token(agent, key, resource=target)
    issued = claims(token)
    assert issued["aud"] == target and issued["scope"] == "tools:call"
    assert issued["cnf"]["jkt"] == key.thumbprint()
    # the platform API does not require it of this agent
    assert token_request(agent, None, scope="agents:read").status_code == 200


def test_an_agent_can_require_dpop_for_all_its_tokens(org: Organization, api: APIClient) -> None:
    agent = credentialed(org, ["agents:read"])
    path = f"/agents/{agent.agent.id}/client"
    assert api.get(path).json()["dpop_bound_access_tokens"] is False
    changed = api.patch(path, {"dpop_bound_access_tokens": True}, format="json")
    assert changed.status_code == 200, changed.content
    assert changed.json()["dpop_bound_access_tokens"] is True
    # the lean path must not issue it a bearer token: the full path refuses
    dpop_refused(token_request(agent, None))
    key = ECKey.generate_key("P-256")
    token, _ = bound_token(agent, key)
    assert claims(token)["cnf"]["jkt"] == key.thumbprint()
    with tenant_context(org.id):
        assert AuditEvent.objects.filter(action="credential.client_changed").exists()
    bad = api.patch(path, {"dpop_bound_access_tokens": "sometimes"}, format="json")
    assert bad.status_code == 400
    assert bad["Content-Type"].startswith("application/problem+json")


def test_introspection_names_the_binding(cred: Credentialed) -> None:
    key = ECKey.generate_key("P-256")
    token, _ = bound_token(cred, key)
    answer = HttpClient().post(
        "/oauth2/introspect", urlencode({"token": token}), FORM,
        headers={"Authorization": basic(cred.client_id, cred.secret)},
    )  # fmt: skip
    body = answer.json()
    assert body["active"] is True and body["token_type"] == "DPoP"
    assert body["cnf"] == {"jkt": key.thumbprint()}


def test_metadata_advertises_dpop() -> None:
    document = HttpClient().get("/.well-known/oauth-authorization-server").json()
    assert document["dpop_signing_alg_values_supported"] == ["ES256", "EdDSA", "PS256", "RS256"]
    resource = HttpClient().get("/.well-known/oauth-protected-resource/api").json()
    assert resource["dpop_signing_alg_values_supported"] == ["ES256", "EdDSA", "PS256", "RS256"]
    assert resource["dpop_bound_access_tokens_required"] is False
