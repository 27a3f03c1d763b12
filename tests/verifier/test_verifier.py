"""agentidp-verifier against a live AgentIdP: a resource server given only the issuer URL and
its own identifier accepts the tokens issued for it, and refuses what an attacker holds: other
audiences, other organizations, forged or tampered tokens, stripped DPoP bindings, revoked
tokens."""

import base64
import hashlib
import json
import time
import uuid
from typing import Any

import pytest
import time_machine
from joserfc import jwt as joserfc_jwt
from joserfc.jwk import ECKey

from agentidp_verifier import (
    Fetched,
    InsufficientScope,
    MalformedRequest,
    TokenMissing,
    TokenRejected,
    Verifier,
    VerifierUnavailable,
    fetch_url,
    jwk_thumbprint,
)
from tests.verifier.conftest import Idp


def b64(value: bytes) -> str:
    return base64.urlsafe_b64encode(value).rstrip(b"=").decode()


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")
    decode = lambda part: json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # noqa: E731
    return decode(header), decode(payload), signature


def compact(header: dict[str, Any], payload: dict[str, Any], signature: str) -> str:
    encode = lambda part: b64(json.dumps(part).encode())  # noqa: E731
    return f"{encode(header)}.{encode(payload)}.{signature}"


def rejected(verifier: Verifier, authorization: str, fragment: str, **kw: Any) -> TokenRejected:
    with pytest.raises(TokenRejected) as caught:
        verifier.verify_request(authorization, **kw)
    assert fragment in caught.value.description, caught.value.description
    return caught.value


def test_a_token_for_the_resource_is_accepted_through_discovery_alone(idp: Idp) -> None:
    verifier = Verifier(idp.issuer, idp.mcp, required_scopes=["tools:call"])
    token = idp.token(idp.alice, resource=idp.mcp, scope="tools:call tools:list")

    accepted = verifier.verify_request(f"Bearer {token}")

    assert accepted.subject == str(idp.alice.agent.id)
    assert accepted.client_id == idp.alice.client_id
    assert accepted.organization_id == str(idp.alice.agent.organization_id)
    assert accepted.scopes == {"tools:call", "tools:list"}
    assert accepted.audiences == (idp.mcp,) and accepted.issuer == idp.issuer
    assert accepted.actors == () and accepted.acting_party is None
    assert accepted.key_thumbprint is None
    assert accepted.expires_at > time.time() > accepted.issued_at - 5
    assert verifier.metadata()["issuer"] == idp.issuer
    # The scheme's name is case-insensitive (RFC 9110 11.1).
    assert verifier.verify_request(f"bearer {token}").token_id == accepted.token_id


def test_tokens_for_other_audiences_and_organizations_are_refused(idp: Idp) -> None:
    verifier = Verifier(idp.issuer, idp.mcp)
    theirs = idp.token(idp.mallory, resource=idp.other)
    rejected(verifier, f"Bearer {theirs}", "Audience doesn't match")
    platform = idp.token(idp.alice, scope="agents:read")
    rejected(verifier, f"Bearer {platform}", "Audience doesn't match")
    # Organization B's agent cannot have a token naming A's server at all.
    answer = idp.token_answer(idp.mallory, resource=idp.mcp)
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_target"
    # A verifier trusting another issuer refuses AgentIdP's tokens even for the same audience.
    elsewhere = Verifier(idp.issuer + "/elsewhere", idp.mcp)
    with pytest.raises(VerifierUnavailable):
        elsewhere.verify_request(f"Bearer {idp.token(idp.alice, resource=idp.mcp)}")


def test_missing_scopes_are_insufficient_scope(idp: Idp) -> None:
    verifier = Verifier(idp.issuer, idp.mcp, required_scopes=["tools:call"])
    token = idp.token(idp.bob, resource=idp.mcp)
    assert verifier.verify_request(f"Bearer {token}").scopes == {"tools:call"}

    with pytest.raises(InsufficientScope) as caught:
        verifier.verify_request(f"Bearer {token}", required_scopes=["tools:list"])
    assert caught.value.status == 403 and caught.value.missing == {"tools:list"}
    bearer, _ = verifier.challenges(caught.value)
    assert 'error="insufficient_scope"' in bearer and 'scope="tools:call tools:list"' in bearer


def test_forged_and_malformed_tokens_are_refused(idp: Idp) -> None:
    verifier = Verifier(idp.issuer, idp.mcp)
    token = idp.token(idp.bob, resource=idp.mcp)
    header, payload, signature = parts(token)
    verifier.verify_request(f"Bearer {token}")

    widened = compact(header, {**payload, "scope": "tools:call tools:list"}, signature)
    rejected(verifier, f"Bearer {widened}", "Signature verification failed")
    unsigned = compact({**header, "alg": "none"}, payload, "")
    rejected(verifier, f"Bearer {unsigned}", "algorithm 'none' is not accepted")
    hmac = compact({**header, "alg": "HS256"}, payload, signature)
    rejected(verifier, f"Bearer {hmac}", "algorithm 'HS256' is not accepted")
    as_rsa = compact({**header, "alg": "RS256"}, payload, signature)
    rejected(verifier, f"Bearer {as_rsa}", "does not match the key")
    untyped = compact({**header, "typ": "JWT"}, payload, signature)
    rejected(verifier, f"Bearer {untyped}", "typ at+jwt")
    unknown_key = compact({**header, "kid": "not-published"}, payload, signature)
    rejected(verifier, f"Bearer {unknown_key}", "does not publish")

    # An attacker's own key under the issuer's kid.
    attacker = ECKey.generate_key("P-256")
    forged = joserfc_jwt.encode(header, payload, attacker, algorithms=["ES256"])
    rejected(verifier, f"Bearer {forged}", "Signature verification failed")

    # An ID token is signed by the same issuer but is not an access token.
    id_token = idp.token_answer(idp.alice, scope="openid agents:read").json()["id_token"]
    rejected(verifier, f"Bearer {id_token}", "typ at+jwt")

    deep = b64(b"[" * 100_000) + ".e30.sig"
    for garbage in ("x", "a.b", "a.b.c", deep[:15000], "é.é.é", "." * 3, "A" * 20_000):
        rejected(verifier, f"Bearer {garbage}", "")
    with pytest.raises(TokenMissing):
        verifier.verify_request(None)
    with pytest.raises(TokenMissing):
        verifier.verify_request(f"Basic {b64(b'user:pass')}")
    for malformed in ("Bearer", "Bearer  ", f"Bearer {token} {token}"):
        with pytest.raises(MalformedRequest):
            verifier.verify_request(malformed)


def test_expiry_and_clock_skew(idp: Idp) -> None:
    # (the status lists are left out: the server would sign them at the travelled times)
    verifier = Verifier(idp.issuer, idp.mcp, leeway=10, check_status=False)
    token = idp.token(idp.bob, resource=idp.mcp)
    _, payload, _ = parts(token)
    with time_machine.travel(payload["exp"] + 5, tick=False):
        verifier.verify_request(f"Bearer {token}")  # within the leeway
    with time_machine.travel(payload["exp"] + 11, tick=False):
        rejected(verifier, f"Bearer {token}", "Signature has expired")
    with time_machine.travel(payload["iat"] - 60, tick=False):
        rejected(verifier, f"Bearer {token}", "not yet valid")
    strict = Verifier(idp.issuer, idp.mcp, max_lifetime=60)
    rejected(strict, f"Bearer {token}", "lifetime is too long")


def test_an_unknown_kid_refetches_the_jwks_once_per_interval(idp: Idp) -> None:
    fetched: list[str] = []

    def counting(url: str) -> Fetched:
        fetched.append(url)
        return fetch_url(url)

    verifier = Verifier(idp.issuer, idp.mcp, fetch=counting, refetch_interval=30)
    token = idp.token(idp.bob, resource=idp.mcp)
    verifier.verify_request(f"Bearer {token}")
    jwks = [url for url in fetched if url.endswith("/jwks.json")]
    assert len(jwks) == 1
    assert fetched[0] == f"{idp.issuer}/.well-known/oauth-authorization-server"

    header, payload, signature = parts(token)

    def jwks_fetches() -> int:
        return len([url for url in fetched if url.endswith("/jwks.json")])

    # Within the interval of the last fetch, unknown kids are refused from the cache: an
    # attacker's stream of invented kids costs the issuer nothing.
    for attempt in range(20):
        forged = compact({**header, "kid": f"rotated-{attempt}"}, payload, signature)
        rejected(verifier, f"Bearer {forged}", "does not publish")
    assert jwks_fetches() == 1
    # After it, the first unknown kid refetches (a rotation), and only the first.
    with time_machine.travel(time.time() + 31):
        for attempt in range(20):
            forged = compact({**header, "kid": f"later-{attempt}"}, payload, signature)
            rejected(verifier, f"Bearer {forged}", "does not publish")
        assert jwks_fetches() == 2
        verifier.verify_request(f"Bearer {token}")  # the issuer's key is still there
    assert jwks_fetches() == 2


def test_a_revoked_token_is_refused_once_its_status_list_says_so(idp: Idp) -> None:
    token = idp.token(idp.alice, resource=idp.mcp)
    other = idp.token(idp.alice, resource=idp.mcp)
    cached = Verifier(idp.issuer, idp.mcp)
    cached.verify_request(f"Bearer {token}")
    _, payload, _ = parts(token)
    assert payload["status"]["status_list"]["uri"].startswith(f"{idp.issuer}/oauth2/status/")

    idp.revoke(idp.alice, token)
    time.sleep(0.6)  # the server builds a list at most 0.5 s before serving it

    fresh = Verifier(idp.issuer, idp.mcp)
    rejected(fresh, f"Bearer {token}", "revoked")
    fresh.verify_request(f"Bearer {other}")
    # A verifier that read the list before keeps it for the list's ttl (60 s here), then sees
    # the revocation.
    cached.verify_request(f"Bearer {token}")
    with time_machine.travel(time.time() + 61):
        rejected(cached, f"Bearer {token}", "revoked")
    # Without the check (a deployment that relies on short lifetimes) the token passes.
    Verifier(idp.issuer, idp.mcp, check_status=False).verify_request(f"Bearer {token}")


def test_a_delegated_token_exposes_its_chain(idp: Idp) -> None:
    verifier = Verifier(idp.issuer, idp.mcp, required_scopes=["tools:call"])
    subject = idp.token(idp.alice, resource=idp.mcp, scope="tools:call")
    delegated = idp.exchange(idp.bob, subject, resource=idp.mcp)

    accepted = verifier.verify_request(f"Bearer {delegated}")

    assert accepted.subject == str(idp.alice.agent.id)
    assert accepted.acting_party is not None
    assert accepted.acting_party.subject == str(idp.bob.agent.id)
    assert accepted.acting_party.client_id == idp.bob.client_id
    assert [actor.subject for actor in accepted.actors] == [str(idp.bob.agent.id)]


def _proof(
    key: ECKey, method: str, url: str, *, token: str | None = None, nonce: str | None = None,
    iat: int | None = None, jti: str | None = None,
) -> str:  # fmt: skip
    body: dict[str, Any] = {"jti": str(uuid.uuid4()) if jti is None else jti, "htm": method, "htu": url,
                            "iat": iat or int(time.time())}  # fmt: skip
    if nonce:
        body["nonce"] = nonce
    if token:
        body["ath"] = b64(hashlib.sha256(token.encode()).digest())
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}
    return joserfc_jwt.encode(header, body, key, algorithms=["ES256"])


def bound_token(idp: Idp, key: ECKey) -> str:
    """A DPoP-bound token for the MCP server, after the server's nonce challenge."""
    endpoint = f"{idp.issuer}/oauth2/token"
    first = idp.token_answer(idp.bob, headers={"DPoP": _proof(key, "POST", endpoint)}, resource=idp.mcp)  # fmt: skip
    assert first.json()["error"] == "use_dpop_nonce"
    proof = _proof(key, "POST", endpoint, nonce=first.headers["DPoP-Nonce"])
    answer = idp.token_answer(idp.bob, headers={"DPoP": proof}, resource=idp.mcp)
    assert answer.status_code == 200 and answer.json()["token_type"] == "DPoP", answer.text
    token: str = answer.json()["access_token"]
    return token


def test_a_dpop_bound_token_needs_a_fresh_proof_of_its_key(idp: Idp) -> None:
    verifier = Verifier(idp.issuer, idp.mcp)
    key = ECKey.generate_key("P-256")
    token = bound_token(idp, key)
    url = f"{idp.mcp}/tools?page=2"

    proof = _proof(key, "POST", url, token=token)
    accepted = verifier.verify_request(f"DPoP {token}", dpop_proof=proof, method="POST", url=url)
    assert accepted.key_thumbprint == jwk_thumbprint(key.as_dict(private=False))

    refusals = {
        "replayed": (f"DPoP {token}", proof, "POST", url, "already used"),
        "as bearer": (f"Bearer {token}", None, "POST", url, "must be sent with the DPoP scheme"),
        "no proof": (f"DPoP {token}", None, "POST", url, "proof is required"),
        "thief's key": (f"DPoP {token}", _proof(ECKey.generate_key("P-256"), "POST", url, token=token), "POST", url, "not the key"),
        "method": (f"DPoP {token}", _proof(key, "GET", url, token=token), "POST", url, "htm"),
        "url": (f"DPoP {token}", _proof(key, "POST", idp.other, token=token), "POST", url, "htu"),
        "no ath": (f"DPoP {token}", _proof(key, "POST", url), "POST", url, "ath"),
        "old": (f"DPoP {token}", _proof(key, "POST", url, token=token, iat=int(time.time()) - 400), "POST", url, "too old"),
        "garbage": (f"DPoP {token}", "not.a.proof", "POST", url, ""),
        "empty jti": (f"DPoP {token}", _proof(key, "POST", url, token=token, jti=""), "POST", url, "jti"),
    }  # fmt: skip
    for name, (authorization, dpop, method, target, fragment) in refusals.items():
        caught = rejected(verifier, authorization, fragment, dpop_proof=dpop, method=method, url=target)  # fmt: skip
        assert caught.scheme == "DPoP", name
        _, dpop_challenge = verifier.challenges(caught)
        assert dpop_challenge.startswith("DPoP error="), (name, dpop_challenge)

    # A bearer token is not accepted under the DPoP scheme.
    bearer = idp.token(idp.bob, resource=idp.mcp)
    rejected(
        verifier, f"DPoP {bearer}", "bearer token sent with the DPoP scheme",
        dpop_proof=_proof(key, "GET", url, token=bearer), method="GET", url=url,
    )  # fmt: skip
