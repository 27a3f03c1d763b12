"""POST /federation/verify: a partner's token is valid only when every check passes; each
refusal has its own stable reason, and each verification is audited."""

import base64
import json
import time
from typing import Any

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from agentidp.devenv import free_port
from agentidp.tenancy import tenant_context
from compliance.models import AuditEvent
from federation.models import FederationPartner
from federation.tasks import partners_maintain_task
from organizations.models import Organization
from tests.federation.conftest import MiniIssuer, new_key

pytestmark = pytest.mark.django_db


def verify(api: APIClient, token: str) -> dict[str, Any]:
    response = api.post("/federation/verify", {"token": token}, format="json")
    assert response.status_code == 200, response.content
    answer: dict[str, Any] = response.json()
    return answer


def reason(api: APIClient, token: str) -> str:
    answer = verify(api, token)
    assert answer["valid"] is False, answer
    return str(answer["reason"])


def _b64(value: dict[str, Any] | bytes) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize("kind", ["EC", "RSA", "OKP"])
def test_a_partners_token_verifies_with_its_claims(
    api: APIClient, org: Organization, mini_issuer: MiniIssuer, register: Any, kind: str
) -> None:
    mini_issuer.keys = [new_key(kind, f"{kind}-1")]
    partner = register()
    answer = verify(api, mini_issuer.token(organization_id="remote-org"))
    assert answer["valid"] is True
    assert answer["partner_id"] == partner["id"] and answer["issuer"] == mini_issuer.issuer
    assert answer["claims"]["sub"] == "remote-agent-1"
    assert answer["header"]["kid"] == f"{kind}-1"
    with tenant_context(org.id):
        event = AuditEvent.objects.filter(organization_id=org.id).order_by("-sequence").first()
    assert event is not None and event.action == "federation.verified"
    assert event.data["partner_id"] == partner["id"] and event.data["sub"] == "remote-agent-1"


def test_each_refusal_has_its_reason(
    api: APIClient, org: Organization, mini_issuer: MiniIssuer, register: Any
) -> None:
    register(allowed_organizations=["remote-org"])
    good = mini_issuer.token(organization_id="remote-org")
    head, body, signature = good.split(".")
    forged = mini_issuer.token(organization_id="remote-org", key=new_key("EC", "ec-1"))
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    cases = {
        "bad_signature": f"{head}.{_b64({**claims, 'sub': 'root'})}.{signature}",
        "unknown_kid": mini_issuer.token(organization_id="remote-org", key=new_key("EC", "nope")),
        "expired": mini_issuer.token(organization_id="remote-org", exp=int(time.time()) - 60),
        "not_yet_valid": mini_issuer.token(
            organization_id="remote-org", nbf=int(time.time()) + 600
        ),
        "audience_mismatch": mini_issuer.token(
            organization_id="remote-org", aud="https://else.example"
        ),
        "organization_not_allowed": mini_issuer.token(organization_id="other-org"),
        "unsupported_algorithm": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{body}.",
        "forbidden_header": mini_issuer.token(header={"jku": "https://evil.example/jwks"}),
        "bad_type": mini_issuer.token(organization_id="remote-org", header={"typ": "dpop+jwt"}),
        "missing_claim": mini_issuer.token(organization_id="remote-org", exp=None),
        "malformed~exp": mini_issuer.token(organization_id="remote-org", exp=10**400),
        "malformed~type": mini_issuer.token(organization_id="remote-org", exp="soon"),
        "malformed": "not-a-token",
        "token_too_large": "a" * 100_000,
        "unknown_issuer": mini_issuer.token(iss="https://stranger.example"),
    }
    cases["bad_signature~forged_key"] = forged
    for expected, token in cases.items():
        code = expected.split("~")[0]
        assert reason(api, token) == code, expected
    hs256 = f"{_b64({'alg': 'HS256', 'typ': 'JWT', 'kid': 'ec-1'})}.{body}.{signature}"
    assert reason(api, hs256) == "unsupported_algorithm"
    with tenant_context(org.id):
        rejected = AuditEvent.objects.filter(organization_id=org.id, action="federation.rejected")
        reasons = {event.data["reason"] for event in rejected}
    assert {"bad_signature", "unknown_issuer", "token_too_large"} <= reasons
    metrics = APIClient().get("/metrics").content.decode()
    for outcome in ("valid", "bad_signature", "unknown_kid", "jwks_unavailable"):
        if outcome == "valid" or outcome in reasons:
            assert f'agentidp_federation_verifications_total{{outcome="{outcome}"}}' in metrics


def test_a_suspended_or_expired_partner_is_refused(
    api: APIClient, org: Organization, mini_issuer: MiniIssuer, register: Any
) -> None:
    partner = register()
    token = mini_issuer.token()
    url = f"/federation/partners/{partner['id']}"
    api.patch(url, {"status": "suspended"}, format="json")
    assert reason(api, token) == "partner_suspended"
    api.patch(url, {"status": "active", "expires_at": "2099-01-01T00:00:00Z"}, format="json")
    assert verify(api, token)["valid"] is True
    with tenant_context(org.id):
        FederationPartner.objects.filter(id=partner["id"]).update(expires_at="2001-01-01T00:00Z")
    assert reason(api, token) == "partner_expired"
    assert api.get(url).json()["status"] == "expired"


def test_an_unknown_kid_refetches_at_most_once_per_interval(
    api: APIClient, mini_issuer: MiniIssuer, register: Any
) -> None:
    register()
    fetched = mini_issuer.hits["/jwks"]
    rotated = new_key("EC", "ec-2")
    mini_issuer.keys.append(rotated)
    assert verify(api, mini_issuer.token(key=rotated))["valid"] is True  # one refetch
    assert mini_issuer.hits["/jwks"] == fetched + 1
    for _ in range(5):
        assert reason(api, mini_issuer.token(key=new_key("EC", "made-up"))) == "unknown_kid"
    assert mini_issuer.hits["/jwks"] == fetched + 1  # within the interval: no more fetches
    assert verify(api, mini_issuer.token(key=rotated))["valid"] is True  # from the cache


def test_cached_keys_serve_until_their_ttl_then_jwks_unavailable(
    api: APIClient, mini_issuer: MiniIssuer, register: Any, settings: Any
) -> None:
    settings.AGENTIDP["FEDERATION_JWKS_CACHE_TTL_SECONDS"] = 2
    register()
    token = mini_issuer.token()
    mini_issuer.status["/jwks"] = 503  # the partner's keys are unavailable from now on
    assert verify(api, token)["valid"] is True  # the cache
    time.sleep(2.1)
    answer = verify(api, token)
    assert answer["reason"] == "jwks_unavailable" and "HTTP 503" in answer["detail"]
    hits = mini_issuer.hits["/jwks"]
    assert reason(api, token) == "jwks_unavailable"  # fails fast within the interval
    assert mini_issuer.hits["/jwks"] == hits


def test_with_redis_down_the_stored_keys_serve_within_their_ttl(
    api: APIClient, mini_issuer: MiniIssuer, register: Any
) -> None:
    register()
    token = mini_issuer.token()
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
        assert verify(api, token)["valid"] is True


def test_the_beat_job_expires_partners_and_refreshes_stale_keys(
    api: APIClient, org: Organization, mini_issuer: MiniIssuer, register: Any
) -> None:
    partner = register()
    url = f"/federation/partners/{partner['id']}"
    with tenant_context(org.id):
        FederationPartner.objects.filter(id=partner["id"]).update(expires_at="2001-01-01T00:00Z")
    report = partners_maintain_task(str(org.id))
    assert report["expired"] == 1
    assert api.get(url).json()["status"] == "expired"
    with tenant_context(org.id):
        event = AuditEvent.objects.filter(organization_id=org.id).order_by("-sequence").first()
    assert event is not None and event.action == "federation.partner_updated"
    assert event.data["changes"] == {"status": {"from": "active", "to": "expired"}}

    renewed = api.patch(url, {"expires_at": "2099-01-01T00:00:00Z"}, format="json")
    assert renewed.json()["status"] == "active"
    mini_issuer.keys.append(new_key("EC", "ec-3"))
    assert partners_maintain_task(str(org.id))["refreshed"] == 0  # keys still fresh
    with tenant_context(org.id):
        FederationPartner.objects.filter(id=partner["id"]).update(
            keys_fetched_at="2001-01-01T00:00Z"
        )
    report = partners_maintain_task(str(org.id))
    assert report == {"expired": 0, "refreshed": 1, "failed": 0}
    assert [k["kid"] for k in api.get(url).json()["keys"]] == ["ec-1", "ec-3"]


@pytest.mark.parametrize(
    "body",
    [{}, {"token": 5}, {"token": None}, {"token": "x", "extra": 1}, {"token": ["a"]}],
)
def test_bad_verify_bodies_are_problems(api: APIClient, body: dict[str, Any]) -> None:
    response = api.post("/federation/verify", body, format="json")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/problem+json")


def test_a_nul_or_deeply_nested_body_is_refused(api: APIClient) -> None:
    nul = api.post("/federation/verify", '{"token": "a\\u0000b"}', content_type="application/json")
    assert nul.status_code == 400
    deep = api.post("/federation/verify", "[" * 5000 + "]" * 5000, content_type="application/json")
    assert deep.status_code == 400
