"""The verifier against an issuer that misbehaves: keys that rotate, documents that lie, grow,
redirect or vanish, status lists that are forged or too large. The issuer here is a real HTTP
server (pytest-httpserver) serving documents signed with joserfc, so every case the live
AgentIdP never produces can be staged."""

import base64
import json
import time
import uuid
import zlib
from typing import Any

import pytest
import time_machine
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from pytest_httpserver import HTTPServer

from agentidp_verifier import TokenRejected, Verifier, VerifierUnavailable
from agentidp_verifier.fetch import url_allowed

AUDIENCE = "https://api.example.com/orders"


class Issuer:
    """A hand-made issuer on ``httpserver``: RFC 8414 metadata, a JWKS, and status lists."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.url = server.url_for("/issuer")
        self.keys = [ECKey.generate_key("P-256", parameters={"kid": "k1", "alg": "ES256", "use": "sig"})]  # fmt: skip
        self.metadata: dict[str, Any] = {"issuer": self.url, "jwks_uri": server.url_for("/jwks")}

    def serve(self) -> None:
        self.server.clear()
        self.server.expect_request("/.well-known/oauth-authorization-server/issuer").respond_with_json(self.metadata)  # fmt: skip
        jwks = KeySet(list(self.keys)).as_dict(private=False)
        self.server.expect_request("/jwks").respond_with_json(jwks)

    def status_list(self, path: str, values: bytes, *, bits: int = 1, key: ECKey | None = None, **claims: Any) -> str:  # fmt: skip
        uri = self.server.url_for(path)
        lst = base64.urlsafe_b64encode(zlib.compress(values)).rstrip(b"=").decode()
        body = {"sub": uri, "iat": int(time.time()), "ttl": 60,
                "status_list": {"bits": bits, "lst": lst}, **claims}  # fmt: skip
        signer = key or self.keys[0]
        header = {"alg": "ES256", "typ": "statuslist+jwt", "kid": signer.kid}
        self.server.expect_request(path).respond_with_data(jwt.encode(header, body, signer))
        return uri

    def token(self, key: ECKey | None = None, **claims: Any) -> str:
        signer = key or self.keys[0]
        now = int(time.time())
        body = {"iss": self.url, "aud": AUDIENCE, "sub": "agent-1", "client_id": "agt_1",
                "iat": now, "nbf": now, "exp": now + 300, "jti": str(uuid.uuid4()),
                "scope": "orders:read", **claims}  # fmt: skip
        header = {"alg": "ES256", "typ": "at+jwt", "kid": signer.kid}
        return jwt.encode(header, {k: v for k, v in body.items() if v is not None}, signer)


@pytest.fixture
def issuer(httpserver: HTTPServer) -> Issuer:
    made = Issuer(httpserver)
    made.serve()
    return made


def refused(verifier: Verifier, token: str, fragment: str) -> None:
    with pytest.raises(TokenRejected) as caught:
        verifier.verify_request(f"Bearer {token}")
    assert fragment in caught.value.description, caught.value.description


def test_a_rotated_key_is_picked_up_by_one_refetch(issuer: Issuer) -> None:
    verifier = Verifier(issuer.url, AUDIENCE, refetch_interval=0)
    verifier.verify_request(f"Bearer {issuer.token()}")
    issuer.keys.append(ECKey.generate_key("P-256", parameters={"kid": "k2", "alg": "ES256"}))
    issuer.serve()
    assert verifier.verify_request(f"Bearer {issuer.token(issuer.keys[1])}").subject == "agent-1"
    # The retired key leaves the JWKS: its tokens are refused once the cache learns of it.
    del issuer.keys[0]
    issuer.serve()
    refused(verifier, issuer.token(ECKey.generate_key("P-256", parameters={"kid": "k3"})), "does not publish")  # fmt: skip


def test_keys_in_hand_keep_serving_while_the_issuer_is_down(issuer: Issuer) -> None:
    verifier = Verifier(issuer.url, AUDIENCE, refetch_interval=0)
    verifier.verify_request(f"Bearer {issuer.token()}")
    issuer.server.clear()  # every document now answers 500
    verifier.verify_request(f"Bearer {issuer.token()}")
    # A verifier that never had the keys cannot tell good from bad: unavailable, not refused.
    with pytest.raises(VerifierUnavailable):
        Verifier(issuer.url, AUDIENCE).verify_request(f"Bearer {issuer.token()}")


def test_stale_metadata_keeps_serving_and_is_asked_for_once_per_interval(issuer: Issuer) -> None:
    verifier = Verifier(issuer.url, AUDIENCE, metadata_max_age=1, refetch_interval=30)
    assert verifier.metadata()["issuer"] == issuer.url
    issuer.server.clear()  # the issuer now answers 500
    before = len(issuer.server.log)
    with time_machine.travel(time.time() + 2):
        for _ in range(5):
            assert verifier.metadata()["issuer"] == issuer.url
    assert len(issuer.server.log) == before + 1


def test_unreachable_issuer_is_unavailable_and_not_asked_again_at_once(httpserver: HTTPServer) -> None:  # fmt: skip
    token = Issuer(httpserver).token()
    verifier = Verifier(httpserver.url_for("/issuer"), AUDIENCE)
    for _ in range(5):
        with pytest.raises(VerifierUnavailable):
            verifier.verify_request(f"Bearer {token}")
    assert len(httpserver.log) == 1


@pytest.mark.parametrize(
    "metadata, reason",
    [
        ({"issuer": "https://evil.example.com"}, "names issuer"),
        ({"jwks_uri": "http://169.254.169.254/latest/meta-data"}, "no usable jwks_uri"),
        ({"jwks_uri": "file:///etc/passwd"}, "no usable jwks_uri"),
        ({"jwks_uri": None}, "no usable jwks_uri"),
    ],
)
def test_metadata_that_lies_is_not_used(issuer: Issuer, metadata: dict[str, Any], reason: str) -> None:  # fmt: skip
    issuer.metadata.update(metadata)
    issuer.serve()
    with pytest.raises(VerifierUnavailable, match=reason):
        Verifier(issuer.url, AUDIENCE).verify_request(f"Bearer {issuer.token()}")


def test_redirects_and_oversized_documents_are_not_followed(issuer: Issuer) -> None:
    issuer.server.clear()
    issuer.server.expect_request("/.well-known/oauth-authorization-server/issuer").respond_with_data(
        "", status=302, headers={"Location": "http://169.254.169.254/"}
    )  # fmt: skip
    with pytest.raises(VerifierUnavailable, match="302"):
        Verifier(issuer.url, AUDIENCE).verify_request(f"Bearer {issuer.token()}")
    issuer.serve()
    issuer.server.clear()
    issuer.server.expect_request("/.well-known/oauth-authorization-server/issuer").respond_with_json(issuer.metadata)  # fmt: skip
    issuer.server.expect_request("/jwks").respond_with_data(b"{" + b" " * (5 << 20) + b"}")
    with pytest.raises(VerifierUnavailable, match="larger than"):
        Verifier(issuer.url, AUDIENCE).verify_request(f"Bearer {issuer.token()}")


def test_only_the_issuers_https_or_loopback_urls_are_fetched() -> None:
    assert url_allowed("https://idp.example.com/.well-known/jwks.json")
    assert url_allowed("http://localhost:8000/x") and url_allowed("http://127.0.0.1/x")
    assert url_allowed("http://[::1]:8000/x")
    for refused_url in ("http://idp.example.com/", "http://169.254.169.254/", "ftp://x/",
                        "https://user:pw@idp.example.com/", "file:///etc/passwd", "https:///x"):  # fmt: skip
        assert not url_allowed(refused_url), refused_url
    with pytest.raises(ValueError, match="https"):
        Verifier("http://idp.example.com", AUDIENCE)
    with pytest.raises(ValueError, match="unsupported algorithms"):
        Verifier("https://idp.example.com", AUDIENCE, algorithms=["HS256"])


def test_revocation_and_suspension_in_status_lists(issuer: Issuer) -> None:
    verifier = Verifier(issuer.url, AUDIENCE)
    one_bit = issuer.status_list("/issuer/status/1", bytes([0b0000_0100]))
    refused(verifier, issuer.token(status={"status_list": {"idx": 2, "uri": one_bit}}), "revoked")
    verifier.verify_request(f"Bearer {issuer.token(status={'status_list': {'idx': 1, 'uri': one_bit}})}")  # fmt: skip
    refused(verifier, issuer.token(status={"status_list": {"idx": 8, "uri": one_bit}}), "out of range")  # fmt: skip
    # Two bits per token: 0x02 at index 1 is SUSPENDED, which is not VALID.
    two_bits = issuer.status_list("/issuer/status/2", bytes([0b0000_1000]), bits=2)
    refused(verifier, issuer.token(status={"status_list": {"idx": 1, "uri": two_bits}}), "revoked")
    verifier.verify_request(f"Bearer {issuer.token(status={'status_list': {'idx': 0, 'uri': two_bits}})}")  # fmt: skip


@pytest.mark.parametrize(
    "status, reason",
    [
        ({"status_list": {"idx": 1, "uri": "http://169.254.169.254/latest"}}, "outside the issuer"),
        ({"status_list": {"idx": 1, "uri": "https://evil.example.com/issuer/status/1"}}, "outside the issuer"),
        ({"status_list": {"idx": -1, "uri": "/issuer/status/1"}}, "malformed status"),
        ({"status_list": {"idx": "1", "uri": "/issuer/status/1"}}, "malformed status"),
        ({"status_list": "x"}, "malformed status"),
    ],
)  # fmt: skip
def test_a_status_claim_naming_anything_but_the_issuers_list_is_refused_unfetched(
    issuer: Issuer, status: dict[str, Any], reason: str
) -> None:
    verifier = Verifier(issuer.url, AUDIENCE)
    verifier.verify_request(f"Bearer {issuer.token()}")
    before = len(issuer.server.log)
    refused(verifier, issuer.token(status=status), reason)
    assert len(issuer.server.log) == before


def test_forged_or_hostile_status_lists_make_the_verifier_unavailable(issuer: Issuer) -> None:
    intruder = ECKey.generate_key("P-256", parameters={"kid": "k1"})
    cases: dict[str, dict[str, Any]] = {
        "/issuer/status/forged": {"key": intruder},
        "/issuer/status/other-subject": {"sub": "https://elsewhere.example.com/list"},
        "/issuer/status/expired": {"exp": int(time.time()) - 3600},
    }
    for path, changes in cases.items():
        uri = issuer.status_list(path, bytes(1), **changes)
        with pytest.raises(VerifierUnavailable):
            Verifier(issuer.url, AUDIENCE).verify_request(
                f"Bearer {issuer.token(status={'status_list': {'idx': 0, 'uri': uri}})}"
            )
    # A zlib bomb: 64 MiB of zeros in a few kilobytes is not inflated past the bound.
    bomb = issuer.status_list("/issuer/status/bomb", bytes(64 << 20))
    with pytest.raises(VerifierUnavailable, match="too large"):
        Verifier(issuer.url, AUDIENCE).verify_request(
            f"Bearer {issuer.token(status={'status_list': {'idx': 0, 'uri': bomb}})}"
        )


def test_delegation_chains_are_read_outermost_first_and_malformed_ones_refused(issuer: Issuer) -> None:  # fmt: skip
    verifier = Verifier(issuer.url, AUDIENCE)
    act = {"sub": "agent-3", "client_id": "agt_3", "act": {"sub": "agent-2", "iss": "https://partner.example.com"}}  # fmt: skip
    accepted = verifier.verify_request(f"Bearer {issuer.token(act=act)}")
    assert [(a.subject, a.client_id, a.issuer) for a in accepted.actors] == [
        ("agent-3", "agt_3", None), ("agent-2", None, "https://partner.example.com"),
    ]  # fmt: skip
    deep: dict[str, Any] = {"sub": "x"}
    for _ in range(40):
        deep = {"sub": "x", "act": deep}
    for hostile in ({"client_id": "no-sub"}, {"sub": "a", "act": "b"}, deep):
        refused(verifier, issuer.token(act=hostile), "act claim")


def test_claims_of_the_wrong_type_are_refused(issuer: Issuer) -> None:
    verifier = Verifier(issuer.url, AUDIENCE)
    for claims, reason in (
        ({"scope": ["orders:read"]}, "must be strings"),
        ({"client_id": None}, "client_id"),
        ({"exp": time.time() + 300.5}, "integers"),
        ({"cnf": {"x5t#S256": "abc"}}, "cnf claim"),
        ({"aud": ["https://other.example.com", AUDIENCE]}, ""),
    ):
        token = issuer.token(**claims)
        if reason:
            refused(verifier, token, reason)
        else:
            assert verifier.verify_request(f"Bearer {token}").audiences[1] == AUDIENCE
    assert json.dumps(verifier.protected_resource_metadata())  # a JSON document
