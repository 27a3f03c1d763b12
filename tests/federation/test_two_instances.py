"""Federation end to end between two live AgentIdP instances on loopback: A is this test run's
live server (its own database and issuer), B a whole ``make run`` stack (embedded PostgreSQL
and Redis, its own issuer) with short key lifetimes so that rotations can be watched. A trusts
B; B's agent's token verifies at A and is exchanged for an A token that works on A's API within
its limits; then each refusal."""

import base64
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from agentidp.conf import agentidp_settings
from tests.factories import OrganizationFactory
from tests.live import Stack
from tests.oidc.conftest import Credentialed, credentialed, jwt_parts

pytestmark = pytest.mark.django_db

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@pytest.fixture
def b(partner_run: Stack) -> Stack:
    """B: the partner deployment (tests/conftest.py: ``partner_run``)."""
    return partner_run


@pytest.fixture(autouse=True)
def _a_reaches_b_on_loopback(settings: Any) -> None:
    """A's outbound guard allows loopback (B), as ``make run`` does; fetches time out fast."""
    settings.AGENTIDP["SSRF_ALLOWLIST"] = ["127.0.0.1", "::1"]
    settings.AGENTIDP["WEBHOOK_ALLOW_HTTP"] = True
    settings.AGENTIDP["SSRF_ALLOWED_PORTS"] = ["443", "80", "1024-65535"]
    settings.AGENTIDP["FEDERATION_FETCH_TIMEOUT_SECONDS"] = 1.0


class A:
    """A's live server, seen as one of its organizations' agents would see it."""

    def __init__(self, base: str, admin: Credentialed) -> None:
        self.base = base
        self.admin = admin
        self.organization_id = str(admin.agent.organization_id)
        response = requests.post(
            f"{base}/oauth2/token", data={"grant_type": "client_credentials"},
            auth=(admin.client_id, admin.secret), timeout=10,
        )  # fmt: skip
        assert response.status_code == 200, response.text
        self.headers = {"Authorization": f"Bearer {response.json()['access_token']}"}

    def post(self, path: str, body: dict[str, Any]) -> requests.Response:
        return requests.post(f"{self.base}{path}", json=body, headers=self.headers, timeout=30)

    def patch(self, path: str, body: dict[str, Any]) -> requests.Response:
        return requests.patch(f"{self.base}{path}", json=body, headers=self.headers, timeout=30)

    def get(self, path: str) -> requests.Response:
        return requests.get(f"{self.base}{path}", headers=self.headers, timeout=30)

    def trust(self, b: Stack, **body: Any) -> dict[str, Any]:
        response = self.post(
            "/federation/trust",
            {"issuer": b.base, "did": did_of(b), "allowed_scopes": ["agents:read"], **body},
        )
        assert response.status_code == 201, response.text
        partner: dict[str, Any] = response.json()
        return partner

    def verify(self, token: str) -> dict[str, Any]:
        response = self.post("/federation/verify", {"token": token})
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def exchange(self, assertion: str, **params: str) -> requests.Response:
        """The JWT bearer grant at A's token endpoint. Every test's organization trusts B, so
        the request names this one (``organization_id``)."""
        params.setdefault("organization_id", self.organization_id)
        return requests.post(
            f"{self.base}/oauth2/token",
            data={"grant_type": JWT_BEARER, "assertion": assertion, **params},
            timeout=30,
        )


def did_of(b: Stack) -> str:
    document = requests.get(f"{b.base}/.well-known/did.json", timeout=10).json()
    return str(document["id"])


def a_registered_at_b(b: Stack) -> None:
    """B's organization registers A's deployment as a resource (only a registered resource is
    ever a token's aud) and grants its demo agent agents:read there; once per B."""
    issuer = agentidp_settings().issuer
    token = b.as_demo_agent(
        "/oauth2/token", grant_type="client_credentials", scope="resources:manage"
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    listed = requests.get(f"{b.base}/resources", headers=headers, timeout=10).json()["results"]
    known = [r for r in listed if r["identifier"] == issuer]
    if known:
        return
    created = requests.post(
        f"{b.base}/resources", headers=headers, timeout=10,
        json={"identifier": issuer, "name": "Deployment A",
              "scopes": [{"name": "agents:read", "description": "Read A's agents"}]},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    granted = requests.put(
        f"{b.base}/resources/{created.json()['id']}/grants/{jwt_parts(token)[1]['sub']}",
        headers=headers, json={"scopes": ["agents:read"]}, timeout=10,
    )  # fmt: skip
    assert granted.status_code == 200, granted.text


def b_token(b: Stack) -> str:
    """A fresh token of B's demo agent, meant for A (its aud is A's issuer)."""
    a_registered_at_b(b)
    response = b.as_demo_agent(
        "/oauth2/token", grant_type="client_credentials", scope="agents:read",
        resource=agentidp_settings().issuer,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


@pytest.fixture
def a(live_server: Any, run_in_threads: Callable[..., list[Any]]) -> A:
    """A fresh organization of A with an agent that manages and verifies federation."""
    (admin,) = run_in_threads(
        lambda: credentialed(
            OrganizationFactory(),
            scopes=["federation:manage", "federation:verify", "agents:read"],
        )
    )
    assert isinstance(admin, Credentialed), admin
    return A(live_server.url, admin)


def test_b_token_verifies_at_a_and_is_exchanged_for_an_a_token(a: A, b: Stack) -> None:
    partner = a.trust(b)
    assert partner["did"] == did_of(b) and partner["status"] == "active"
    token = b_token(b)
    b_claims = jwt_parts(token)[1]
    answer = a.verify(token)
    assert answer["valid"] is True, answer
    assert answer["issuer"] == b.base and answer["claims"]["sub"] == b_claims["sub"]
    assert answer["claims"]["organization_id"] == b_claims["organization_id"]

    exchanged = a.exchange(token)
    assert exchanged.status_code == 200, exchanged.text
    local = exchanged.json()["access_token"]
    claims = jwt_parts(local)[1]
    assert claims["organization_id"] == a.organization_id
    assert claims["act"] == {"iss": b.base, "sub": b_claims["sub"]}
    assert claims["scope"] == "agents:read"
    headers = {"Authorization": f"Bearer {local}"}
    agents = requests.get(f"{a.base}/agents", headers=headers, timeout=10)
    assert agents.status_code == 200, agents.text
    assert [x["id"] for x in agents.json()["results"]] == [str(a.admin.agent.id)]
    write = requests.post(f"{a.base}/agents", json={"name": "x"}, headers=headers, timeout=10)
    assert write.status_code == 403
    # the exchanged token is A's own: B does not accept it
    at_b = requests.get(f"{b.base}/agents", headers=headers, timeout=10)
    assert at_b.status_code == 401


def test_an_unknown_issuer_is_refused_and_another_organization_sees_no_partner(
    a: A, b: Stack, live_server: Any, run_in_threads: Callable[..., list[Any]]
) -> None:
    partner = a.trust(b)
    (stranger_admin,) = run_in_threads(
        lambda: credentialed(
            OrganizationFactory(), scopes=["federation:manage", "federation:verify"]
        )
    )
    stranger = A(live_server.url, stranger_admin)
    token = b_token(b)
    assert stranger.verify(token)["reason"] == "unknown_issuer"
    assert stranger.get("/federation/partners").json()["results"] == []
    assert stranger.get(f"/federation/partners/{partner['id']}").status_code == 404
    assert (
        stranger.patch(f"/federation/partners/{partner['id']}", {"status": "suspended"}).status_code
        == 404
    )
    refused = a.exchange(token, organization_id=stranger.organization_id)
    assert refused.status_code == 400 and refused.json()["error_description"].startswith(
        "unknown_issuer"
    )
    assert a.verify(token)["valid"] is True  # A's own partner is untouched


def test_a_tampered_token_is_refused(a: A, b: Stack) -> None:
    a.trust(b)
    head, body, signature = b_token(b).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["scope"] = "agents:read agents:write"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert a.verify(f"{head}.{forged}.{signature}")["reason"] == "bad_signature"
    assert a.exchange(f"{head}.{forged}.{signature}").json()["error"] == "invalid_grant"


def test_an_expired_partner_is_refused(a: A, b: Stack) -> None:
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3))
    a.trust(b, expires_at=soon)
    assert a.verify(b_token(b))["valid"] is True
    time.sleep(3.5)
    token = b_token(b)
    assert a.verify(token)["reason"] == "partner_expired"
    assert a.exchange(token).json()["error_description"].startswith("partner_expired")


def test_a_suspended_partner_is_refused(a: A, b: Stack) -> None:
    partner = a.trust(b)
    assert (
        a.patch(f"/federation/partners/{partner['id']}", {"status": "suspended"}).status_code == 200
    )
    token = b_token(b)
    assert a.verify(token)["reason"] == "partner_suspended"
    assert a.exchange(token).json()["error_description"].startswith("partner_suspended")


def test_an_organization_outside_the_allow_list_is_refused(a: A, b: Stack) -> None:
    token = b_token(b)
    b_organization = jwt_parts(token)[1]["organization_id"]
    partner = a.trust(b, allowed_organizations=["some-other-organization"])
    assert a.verify(token)["reason"] == "organization_not_allowed"
    a.patch(f"/federation/partners/{partner['id']}", {"allowed_organizations": [b_organization]})
    assert a.verify(token)["valid"] is True


def test_a_scope_outside_the_cap_is_refused(a: A, b: Stack) -> None:
    a.trust(b, allowed_scopes=["agents:read"])
    refused = a.exchange(b_token(b), scope="audit:read")
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_scope"
    narrowed = a.exchange(b_token(b), scope="agents:read audit:read")
    assert narrowed.json()["scope"] == "agents:read"


def test_a_replayed_assertion_is_refused(a: A, b: Stack) -> None:
    a.trust(b)
    token = b_token(b)
    assert a.exchange(token).status_code == 200
    replay = a.exchange(token)
    assert replay.status_code == 400
    assert replay.json()["error_description"].startswith("replayed")


def _rotate(b: Stack) -> dict[str, Any]:
    """Rotate B's keys as soon as its next keys have been published long enough."""
    deadline = time.monotonic() + 15
    while True:
        result = b.manage("rotatesigningkeys")
        if result.returncode == 0:
            rotated: dict[str, Any] = json.loads(result.stdout)
            return rotated
        assert time.monotonic() < deadline, result.stderr
        time.sleep(0.5)


def _token_signed_by(b: Stack, kid: str) -> str:
    """B's web process picks up a rotation within its key ring's refresh (10 s)."""
    deadline = time.monotonic() + 15
    while True:
        token = b_token(b)
        if jwt_parts(token)[0]["kid"] == kid:
            return token
        assert time.monotonic() < deadline, "B never signed with its new key"
        time.sleep(0.5)


def test_b_rotates_a_prepublished_key_is_accepted_a_removed_one_refused(a: A, b: Stack) -> None:
    partner = a.trust(b)
    url = f"/federation/partners/{partner['id']}"
    fetched_at = a.get(url).json()["last_fetch_at"]
    old = b_token(b)
    old_kid = jwt_parts(old)[0]["kid"]
    assert a.verify(old)["valid"] is True

    first = _rotate(b)
    new_kid = first["current"]["ES256"]
    assert first["retired"]["ES256"] == old_kid
    assert new_kid in [k["kid"] for k in partner["keys"]]  # A had it: pre-published
    new = _token_signed_by(b, new_kid)
    assert a.verify(new)["valid"] is True
    assert a.get(url).json()["last_fetch_at"] == fetched_at  # accepted without a refetch

    time.sleep(8.5)  # every token the old key signed has expired: the next rotation removes it
    second = _rotate(b)
    assert old_kid in second["removed"]
    refreshed = a.post(f"{url}/refresh-keys", {})
    assert refreshed.status_code == 200, refreshed.text
    assert old_kid not in [k["kid"] for k in refreshed.json()["keys"]]
    assert a.verify(old)["reason"] == "unknown_kid"
    assert a.verify(_token_signed_by(b, second["current"]["ES256"]))["valid"] is True


def test_b_unreachable_cached_keys_serve_until_their_ttl(a: A, b: Stack, settings: Any) -> None:
    settings.AGENTIDP["FEDERATION_JWKS_CACHE_TTL_SECONDS"] = 3
    settings.AGENTIDP["FEDERATION_JWKS_REFETCH_INTERVAL_SECONDS"] = 2
    a.trust(b)
    token = b_token(b)
    web = b.web_pid()
    os.kill(web, signal.SIGSTOP)  # B's web process hangs: connections open, no answer
    try:
        assert a.verify(token)["valid"] is True  # A's cached copy of B's keys
        time.sleep(3.2)
        answer = a.verify(token)
        assert answer["reason"] == "jwks_unavailable", answer
        assert "did not answer in time" in answer["detail"]
        refused = a.exchange(token)
        assert refused.status_code == 503 and refused.json()["error"] == "temporarily_unavailable"
        assert a.verify(token)["reason"] == "jwks_unavailable"  # at once: no second wait
    finally:
        os.kill(web, signal.SIGCONT)
    # B, resumed, first works through the requests that queued while it hung; on a loaded
    # machine that can outlast the 1 s fetch timeout, which this step is not about
    settings.AGENTIDP["FEDERATION_FETCH_TIMEOUT_SECONDS"] = 10.0
    time.sleep(2.1)  # the next fetch is tried once the refetch interval has passed
    back = a.verify(b_token(b))
    assert back["valid"] is True, back  # B is back
