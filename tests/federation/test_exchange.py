"""The token endpoint's federated grants: a partner's verified assertion (RFC 7523 JWT bearer,
or RFC 8693 token exchange) becomes a short-lived local token for a federated principal, within
the partner's limits, once; the API honours it while the partner is trusted."""

import time
from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client as HttpClient
from rest_framework.test import APIClient

from agentidp.conf import agentidp_settings
from agentidp.devenv import free_port
from agentidp.tenancy import tenant_context
from agentidp.usage import redis_client
from compliance.models import AuditEvent
from oidc import ratelimit
from organizations.choices import MemberRole
from organizations.models import Organization
from tests.factories import AgentFactory, OrganizationFactory, StaffFactory
from tests.federation.conftest import MiniIssuer
from tests.oidc.conftest import FORM, basic, credentialed, jwt_parts

pytestmark = pytest.mark.django_db

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


def exchange(assertion: str, **params: str) -> Any:
    data = {"grant_type": JWT_BEARER, "assertion": assertion, **params}
    return HttpClient().post("/oauth2/token", urlencode(data), FORM)


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def granted(response: Any) -> str:
    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    token: str = response.json()["access_token"]
    return token


def refused(response: Any, error: str, status: int = 400) -> str:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error"] == error, body
    return str(body["error_description"])


def test_a_jwt_bearer_assertion_becomes_a_local_token_of_the_trusting_organization(
    org: Organization, mini_issuer: MiniIssuer, register: Any
) -> None:
    partner = register(allowed_scopes=["agents:read", "audit:read"])
    assertion = mini_issuer.token(organization_id="remote-org", scope="agents:read")
    response = exchange(assertion)
    token = granted(response)
    body = response.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "agents:read"
    assert 0 < body["expires_in"] <= 300
    header, claims = jwt_parts(token)
    assert header["typ"] == "at+jwt"
    assert claims["iss"] == agentidp_settings().issuer
    assert claims["organization_id"] == str(org.id)
    assert claims["sub"] == f"urn:agentidp:federated:{partner['id']}:remote-agent-1"
    assert claims["act"] == {"iss": mini_issuer.issuer, "sub": "remote-agent-1"}
    assert claims["federation"] == {
        "partner_id": partner["id"], "issuer": mini_issuer.issuer, "organization_id": "remote-org"
    }  # fmt: skip
    assert claims["client_id"] == f"federation:{partner['id']}"
    with tenant_context(org.id):
        event = AuditEvent.objects.filter(organization_id=org.id).order_by("-sequence").first()
    assert event is not None and event.action == "token.issued"
    assert event.actor_type == "federated" and event.actor_id == claims["sub"]
    assert event.data["federated"] is True and event.data["partner_id"] == partner["id"]
    assert event.data["partner_issuer"] == mini_issuer.issuer
    assert event.data["remote_sub"] == "remote-agent-1"


def test_the_exchanged_token_works_on_the_api_within_its_limits(
    org: Organization, other_org: Organization, mini_issuer: MiniIssuer, register: Any
) -> None:
    register()
    mine = AgentFactory(organization=org, name="ours")
    AgentFactory(organization=other_org, name="theirs")
    client = bearer(granted(exchange(mini_issuer.token())))
    listed = client.get("/agents")
    assert listed.status_code == 200, listed.content
    assert [a["id"] for a in listed.json()["results"]] == [str(mine.id)]
    assert client.get(f"/agents/{mine.id}").status_code == 200
    assert client.post("/agents", {"name": "intruder"}, format="json").status_code == 403
    assert client.get("/audit").status_code == 403  # audit:read not granted
    assert client.get("/federation/partners").status_code == 403
    assert client.get("/agent-info").status_code == 401  # not one of our agents


def test_token_exchange_answers_with_the_issued_token_type(
    mini_issuer: MiniIssuer, register: Any
) -> None:
    register()
    response = exchange(
        "",
        grant_type=TOKEN_EXCHANGE,
        subject_token=mini_issuer.token(),
        subject_token_type=ACCESS_TOKEN_TYPE,
        requested_token_type=ACCESS_TOKEN_TYPE,
    )
    granted(response)
    assert response.json()["issued_token_type"] == ACCESS_TOKEN_TYPE


def test_an_assertion_is_exchanged_once(mini_issuer: MiniIssuer, register: Any) -> None:
    register()
    assertion = mini_issuer.token()
    granted(exchange(assertion))
    assert refused(exchange(assertion), "invalid_grant").startswith("replayed")
    assert refused(exchange(mini_issuer.token(jti=None)), "invalid_grant").startswith(
        "missing_claim"
    )


@pytest.mark.parametrize("grant", [JWT_BEARER, TOKEN_EXCHANGE])
def test_an_assertion_is_spent_for_the_whole_deployment_and_durably(
    grant: str,
    org: Organization,
    other_org: Organization,
    mini_issuer: MiniIssuer,
    register: Any,
    client_for: Any,
) -> None:
    """Two organizations trust the same issuer: an assertion exchanged into one is refused in
    the other too, by both grants, and after Redis has lost everything."""
    register()
    other_owner = client_for(StaffFactory(organization=other_org, role="owner"))
    trusted = other_owner.post(
        "/federation/trust",
        {"issuer": mini_issuer.issuer, "allowed_scopes": ["agents:read"]}, format="json",
    )  # fmt: skip
    assert trusted.status_code == 201, trusted.content

    def spend(assertion: str, organization: Organization) -> Any:
        if grant == JWT_BEARER:
            return exchange(assertion, organization_id=str(organization.id))
        return exchange(
            "", grant_type=TOKEN_EXCHANGE, subject_token=assertion,
            subject_token_type=ACCESS_TOKEN_TYPE, organization_id=str(organization.id),
        )  # fmt: skip

    assertion = mini_issuer.token()
    token = granted(spend(assertion, org))
    assert jwt_parts(token)[1]["organization_id"] == str(org.id)
    assert refused(spend(assertion, other_org), "invalid_grant").startswith("replayed")
    redis_client().flushdb()  # as a Redis restart without persistence leaves it
    assert refused(spend(assertion, other_org), "invalid_grant").startswith("replayed")
    assert refused(spend(assertion, org), "invalid_grant").startswith("replayed")
    with tenant_context(other_org.id):
        rejected = AuditEvent.objects.filter(
            organization_id=other_org.id, action="federation.rejected"
        ).count()
    assert rejected == 2  # each refusal audited where it was made
    granted(spend(mini_issuer.token(), other_org))  # a fresh assertion is fine there


def test_spent_assertions_are_not_readable_by_the_application_role() -> None:
    from django.db import connection
    from django.db.utils import ProgrammingError

    with pytest.raises(ProgrammingError, match="permission denied"):
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM oidc_assertionuse")


def test_scopes_are_the_intersection_with_the_partners_cap(
    mini_issuer: MiniIssuer, register: Any
) -> None:
    register(allowed_scopes=["agents:read"])
    both = exchange(mini_issuer.token(), scope="agents:read audit:read")
    assert granted(both) and both.json()["scope"] == "agents:read"
    outside = exchange(mini_issuer.token(), scope="audit:read")
    assert refused(outside, "invalid_scope").startswith("scope_not_allowed")
    assert refused(exchange(mini_issuer.token(), scope="agents:read  x"), "invalid_scope")
    no_scope_claim = exchange(mini_issuer.token(scope=None))
    assert no_scope_claim.json()["scope"] == "agents:read"  # the cap


def test_suspending_or_removing_the_partner_stops_its_exchanged_tokens(
    api: APIClient, mini_issuer: MiniIssuer, register: Any
) -> None:
    partner = register()
    client = bearer(granted(exchange(mini_issuer.token())))
    assert client.get("/agents").status_code == 200
    url = f"/federation/partners/{partner['id']}"
    api.patch(url, {"status": "suspended"}, format="json")
    assert client.get("/agents").status_code == 401
    assert refused(exchange(mini_issuer.token()), "invalid_grant").startswith("partner_suspended")
    api.patch(url, {"status": "active"}, format="json")
    assert client.get("/agents").status_code == 200
    api.patch(url, {"allowed_scopes": ["audit:read"]}, format="json")
    assert client.get("/agents").status_code == 403  # the cap lowered applies at once
    api.delete(url)
    assert client.get("/agents").status_code == 401


def test_a_partner_allowed_to_write_acts_as_a_federated_principal_in_the_audit_log(
    api: APIClient, org: Organization, mini_issuer: MiniIssuer, register: Any
) -> None:
    partner = register(allowed_scopes=["agents:read", "agents:write"], read_only=False)
    token = granted(exchange(mini_issuer.token(scope="agents:write")))
    created = bearer(token).post("/agents", {"name": "made-by-partner"}, format="json")
    assert created.status_code == 201, created.content
    with tenant_context(org.id):
        event = AuditEvent.objects.filter(organization_id=org.id, action="agent.created").get()
    assert event.actor_type == "federated"
    assert event.actor_id.startswith(f"urn:agentidp:federated:{partner['id']}:")


def test_refusals_are_oauth_errors_and_audited_as_rejections(
    org: Organization, mini_issuer: MiniIssuer, register: Any
) -> None:
    register()
    expired = mini_issuer.token(exp=int(time.time()) - 120)
    assert refused(exchange(expired), "invalid_grant").startswith("expired")
    with tenant_context(org.id):
        rejected = AuditEvent.objects.filter(organization_id=org.id, action="federation.rejected")
        assert [e.data["reason"] for e in rejected] == ["expired"]
        assert rejected[0].data["grant_type"] == JWT_BEARER
    stranger = mini_issuer.token(iss="https://stranger.example")
    assert refused(exchange(stranger), "invalid_grant").startswith("unknown_issuer")
    assert refused(exchange("x.y.z"), "invalid_grant").startswith("malformed")
    assert refused(exchange("a" * 100_000), "invalid_grant").startswith("token_too_large")
    long_sub = mini_issuer.token(sub="s" * 129)
    assert refused(exchange(long_sub), "invalid_grant").startswith("malformed")
    for exp in (10**400, 1e300, int(time.time()) + 2 * 86400):
        far = mini_issuer.token(exp=exp)
        assert refused(exchange(far), "invalid_grant").startswith("malformed"), exp


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"assertion": ""}, "invalid_request"),
        ({"grant_type": TOKEN_EXCHANGE, "subject_token": "x"}, "invalid_request"),
        ({"grant_type": TOKEN_EXCHANGE, "subject_token": "x", "subject_token_type": ACCESS_TOKEN_TYPE,
          "requested_token_type": "urn:ietf:params:oauth:token-type:id_token"}, "invalid_request"),
        ({"grant_type": TOKEN_EXCHANGE, "subject_token": "x", "subject_token_type": ACCESS_TOKEN_TYPE,
          "actor_token": "y"}, "invalid_request"),
        ({"client_secret": "s"}, "invalid_request"),
        ({"resource": "not a uri"}, "invalid_target"),
        ({"organization_id": "nope"}, "invalid_request"),
    ],
)  # fmt: skip
def test_malformed_requests_are_invalid_request(
    mini_issuer: MiniIssuer, register: Any, params: dict[str, str], error: str
) -> None:
    register()
    data = {"assertion": mini_issuer.token(), **params}
    refused(exchange(**data), error)


def test_client_credentials_beside_the_assertion_are_refused(
    org: Organization, mini_issuer: MiniIssuer, register: Any
) -> None:
    register()
    agent = credentialed(org)
    data = urlencode({"grant_type": JWT_BEARER, "assertion": mini_issuer.token()})
    response = HttpClient().post(
        "/oauth2/token", data, FORM, headers={"Authorization": basic(agent.client_id, agent.secret)}
    )
    refused(response, "invalid_request")


def test_unreachable_keys_are_temporarily_unavailable(
    mini_issuer: MiniIssuer, register: Any, settings: Any
) -> None:
    settings.AGENTIDP["FEDERATION_JWKS_CACHE_TTL_SECONDS"] = 1
    register()
    mini_issuer.status["/jwks"] = 500
    time.sleep(1.1)
    response = exchange(mini_issuer.token())
    refused(response, "temporarily_unavailable", 503)
    assert response["Retry-After"] == "5"


def test_an_issuer_trusted_by_two_organizations_needs_organization_id(
    client_for: Any, org: Organization, other_org: Organization, mini_issuer: MiniIssuer,
    register: Any,
) -> None:  # fmt: skip
    register()
    other = client_for(StaffFactory(organization=other_org, role="owner"))
    body = {"issuer": mini_issuer.issuer, "allowed_scopes": ["agents:read"]}
    assert other.post("/federation/trust", body, format="json").status_code == 201
    assert "organization_id" in refused(exchange(mini_issuer.token()), "invalid_request")
    token = granted(exchange(mini_issuer.token(), organization_id=str(other_org.id)))
    assert jwt_parts(token)[1]["organization_id"] == str(other_org.id)


def test_introspection_by_the_organizations_client_sees_the_federated_token(
    org: Organization, other_org: Organization, mini_issuer: MiniIssuer, register: Any
) -> None:
    register()
    token = granted(exchange(mini_issuer.token()))
    for owner, active in ((org, True), (other_org, False)):
        client = credentialed(owner)
        answer = HttpClient().post(
            "/oauth2/introspect", urlencode({"token": token}), FORM,
            headers={"Authorization": basic(client.client_id, client.secret)},
        ).json()  # fmt: skip
        assert answer["active"] is active
        if active:
            assert answer["act"]["iss"] == mini_issuer.issuer


def test_exchanges_count_against_the_organizations_quota(
    org: Organization, mini_issuer: MiniIssuer, register: Any
) -> None:
    register()
    with tenant_context(org.id):
        Organization.objects.filter(id=org.id).update(max_tokens_per_month=1)
    granted(exchange(mini_issuer.token()))
    response = exchange(mini_issuer.token())
    assert "quota" in refused(response, "temporarily_unavailable", 429)
    assert int(response["Retry-After"]) >= 1


def test_without_redis_no_token_is_exchanged(
    mini_issuer: MiniIssuer, register: Any, settings: Any
) -> None:
    register()
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    redis_client.cache_clear()
    ratelimit._scripts.clear()  # the admission script is bound to the Redis client
    try:
        response = exchange(mini_issuer.token())
    finally:
        redis_client.cache_clear()
        ratelimit._scripts.clear()
    refused(response, "temporarily_unavailable", 503)
    assert response["Retry-After"] == "5"


def test_a_partners_token_is_exchanged_for_a_resource_only_once_it_is_shared(
    org: Organization, api: APIClient, mini_issuer: MiniIssuer, register: Any, client_for: Any
) -> None:
    """A registered resource the organization did not share with the partner, or any other
    audience, is refused and audited: a partner's agent is never handed a token another server
    accepts. Shared, the partner's agents get tokens naming it, within the shared scopes and
    their own token's, living at most the resource's lifetime, signed with its algorithm."""
    partner = register()
    created = api.post(
        "/resources",
        {"identifier": "https://mcp.example.com/mcp", "name": "Tools", "access_token_lifetime": 120,
         "signing_algorithm": "EdDSA",
         "scopes": [{"name": "tools:call"}, {"name": "tools:list"}, {"name": "tools:admin"}]},
        format="json",
    )  # fmt: skip
    assert created.status_code == 201, created.content
    resource = created.json()
    mcp = "https://mcp.example.com/mcp"
    their_token = mini_issuer.token(scope="tools:call tools:list agents:read")
    for target in (mcp, "https://elsewhere.example/"):
        refused(exchange(assertion=mini_issuer.token(), resource=target), "invalid_target")
    with tenant_context(org.id):
        events = AuditEvent.objects.filter(action="token.target_refused")
        assert {e.data["reason"] for e in events} == {"partner_resource"}
        assert events.count() == 2
    platform = exchange(assertion=mini_issuer.token(), resource=f"{agentidp_settings().issuer}/api")
    assert platform.status_code == 200, platform.content

    path = f"/federation/partners/{partner['id']}/resources"
    shared = api.put(f"{path}/{resource['id']}", {"scopes": ["tools:call", "tools:admin"]}, format="json")  # fmt: skip
    assert shared.status_code == 200, shared.content
    assert shared.json()["identifier"] == mcp and shared.json()["scopes"] == [
        "tools:admin",
        "tools:call",
    ]
    assert [s["resource"] for s in api.get(path).json()] == [resource["id"]]
    with tenant_context(org.id):
        assert AuditEvent.objects.filter(action="federation.resource_shared").count() == 1

    # what both the share and the partner's own token hold: tools:call (not tools:admin,
    # which the partner's token lacks; not tools:list, which is not shared)
    token = granted(exchange(assertion=their_token, resource=mcp))
    header, claims = jwt_parts(token)
    assert claims["aud"] == mcp and claims["scope"] == "tools:call"
    assert header["alg"] == "EdDSA" and claims["exp"] - claims["iat"] <= 120
    assert claims["act"] == {"iss": mini_issuer.issuer, "sub": "remote-agent-1"}
    refused(
        exchange(assertion=mini_issuer.token(scope="tools:list"), resource=mcp), "invalid_scope"
    )
    # asking for a shared scope the partner's token does not hold grants nothing
    fresh = mini_issuer.token(scope="tools:call tools:list agents:read")
    refused(exchange(assertion=fresh, resource=mcp, scope="tools:admin"), "invalid_scope")
    refused(exchange(assertion=mini_issuer.token(scope=None), resource=mcp), "invalid_scope")
    two = urlencode({"grant_type": JWT_BEARER, "assertion": mini_issuer.token(),
                     "resource": [mcp, f"{agentidp_settings().issuer}/api"]}, doseq=True)  # fmt: skip
    refused(HttpClient().post("/oauth2/token", two, FORM), "invalid_target")
    # token exchange (RFC 8693) alike
    exchanged = exchange(
        assertion="", grant_type=TOKEN_EXCHANGE, subject_token=mini_issuer.token(scope="tools:call"),
        subject_token_type=ACCESS_TOKEN_TYPE, resource=mcp,
    )  # fmt: skip
    assert jwt_parts(granted(exchanged))[1]["aud"] == mcp

    # hostile shares: scopes the resource lacks, another organization's resource, a
    # DPoP-only resource, another organization's partner
    refused_share = api.put(f"{path}/{resource['id']}", {"scopes": ["agents:write"]}, format="json")
    assert refused_share.status_code == 400, refused_share.content
    rival = client_for(StaffFactory(organization=OrganizationFactory(), role=MemberRole.OWNER))
    theirs = rival.post("/resources", {"identifier": "https://theirs.example.com/api", "name": "T",
                                       "scopes": [{"name": "x"}]}, format="json")  # fmt: skip
    assert (
        api.put(f"{path}/{theirs.json()['id']}", {"scopes": ["x"]}, format="json").status_code
        == 404
    )
    assert (
        rival.put(f"{path}/{theirs.json()['id']}", {"scopes": ["x"]}, format="json").status_code
        == 404
    )
    dpop_only = api.post("/resources", {"identifier": "https://dpop.example.com/api", "name": "D",
                                        "dpop_required": True, "scopes": [{"name": "x"}]},
                         format="json").json()  # fmt: skip
    assert api.put(f"{path}/{dpop_only['id']}", {"scopes": ["x"]}, format="json").status_code == 400

    # the resource made DPoP-only after it was shared: no bearer token for it
    api.patch(f"/resources/{resource['id']}", {"dpop_required": True}, format="json")
    fresh = mini_issuer.token(scope="tools:call")
    assert "DPoP" in refused(exchange(assertion=fresh, resource=mcp), "invalid_request")
    api.patch(f"/resources/{resource['id']}", {"dpop_required": False}, format="json")

    # the share ended: refused again
    assert api.put(f"{path}/{resource['id']}", {"scopes": []}, format="json").status_code == 204
    refused(
        exchange(assertion=mini_issuer.token(scope="tools:call"), resource=mcp), "invalid_target"
    )
    assert api.get(path).json() == []
