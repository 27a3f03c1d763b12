"""The resource registry: an organization's own APIs and MCP servers as token audiences, with
their own scopes, granted to agents and roles; anything not registered is ``invalid_target``
(RFC 8707), so no agent mints a token for another organization's server."""

from typing import Any

import pytest
from django.test import Client as HttpClient
from rest_framework.test import APIClient

from agentidp.conf import agentidp_settings
from agentidp.tenancy import tenant_context
from agents.models import OrganizationMember
from compliance.models import AuditEvent
from oidc.models import ResourceGrant
from oidc.tokens import api_audience
from organizations.choices import MemberRole, OrganizationStatus
from organizations.models import Organization
from tests.factories import OrganizationFactory, StaffFactory
from tests.oidc.conftest import (
    Credentialed,
    agent_token,
    claims,
    credentialed,
    exchange,
    jwt_parts,
    refused,
    request_token,
)

pytestmark = pytest.mark.django_db

MCP = "https://mcp.example.com/mcp"
TOOLS = [
    {"name": "tools:call", "description": "Call the server's tools"},
    {"name": "tools:list", "description": "List the tools"},
]


def register(api: APIClient, identifier: str = MCP, **fields: Any) -> Any:
    body = {"identifier": identifier, "name": "Tools", "scopes": TOOLS, **fields}
    return api.post("/resources", body, format="json")


def grant(api: APIClient, resource_id: str, agent_id: Any, scopes: Any) -> Any:
    return api.put(f"/resources/{resource_id}/grants/{agent_id}", {"scopes": scopes}, format="json")


def problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    if field is not None:
        assert field in body.get("errors", {}), body
    return body


def events(org: Organization, action: str) -> list[AuditEvent]:
    with tenant_context(org.id):
        return list(AuditEvent.objects.filter(organization_id=org.id, action=action))


@pytest.fixture
def mcp(api: APIClient, cred: Credentialed) -> dict[str, Any]:
    """A registered MCP server whose tools:call the ``cred`` agent may be issued."""
    response = register(api, access_token_lifetime=600)
    assert response.status_code == 201, response.content
    resource: dict[str, Any] = response.json()
    assert grant(api, resource["id"], cred.agent.id, ["tools:call"]).status_code == 200
    return resource


def test_registered_resource_is_listed_read_and_audited(api: APIClient, org: Organization) -> None:
    created = register(api, access_token_lifetime=600, signing_algorithm="EdDSA")
    assert created.status_code == 201, created.content
    resource = created.json()
    assert resource["identifier"] == MCP
    assert resource["scopes"] == TOOLS
    assert resource["access_token_lifetime"] == 600
    assert resource["signing_algorithm"] == "EdDSA"
    assert resource["dpop_required"] is False
    assert api.get(f"/resources/{resource['id']}").json() == resource
    assert [r["id"] for r in api.get("/resources").json()["results"]] == [resource["id"]]
    (event,) = events(org, "resource.created")
    assert event.data["identifier"] == MCP
    assert event.data["scopes"] == ["tools:call", "tools:list"]


@pytest.mark.parametrize(
    ("identifier", "why"),
    [
        ("http://mcp.example.com/mcp", "https"),
        ("https://mcp.example.com/mcp#tools", "fragment"),
        ("mcp.example.com/mcp", "absolute"),
        ("ftp://mcp.example.com/", "https"),
        ("https://user:pw@mcp.example.com/", "absolute"),
        ("https://mcp.example.com/\x00", "NUL"),
        ("https://mcp.example.com/a b", "URI"),
        ("https://" + "a" * 2100 + ".example/", "2048"),
        ("http://testserver/api", "https"),
        ("", "blank"),
    ],
)
def test_identifier_that_is_no_https_uri_is_refused(
    api: APIClient, org: Organization, identifier: str, why: str
) -> None:
    body = problem(register(api, identifier), 400)
    assert why.lower() in str(body).lower()
    assert api.get("/resources").json()["results"] == []


def test_this_deployments_own_origin_is_reserved(api: APIClient, settings: Any) -> None:
    issuer = settings.AGENTIDP["ISSUER"].replace("http://", "https://")
    settings.AGENTIDP = {**settings.AGENTIDP, "ISSUER": issuer}
    body = problem(register(api, f"{issuer}/api"), 400, "identifier")
    assert "own origin" in body["errors"]["identifier"][0]


def test_loopback_http_only_where_the_deployment_allows_it(api: APIClient, settings: Any) -> None:
    problem(register(api, "http://127.0.0.1:8931/mcp"), 400, "identifier")
    settings.AGENTIDP = {**settings.AGENTIDP, "RESOURCE_ALLOW_LOOPBACK_HTTP": True}
    assert register(api, "http://127.0.0.1:8931/mcp").status_code == 201
    problem(register(api, "http://10.0.0.5:8931/mcp"), 400, "identifier")


def test_an_identifier_is_registered_once_on_the_whole_deployment(
    api: APIClient, client_for: Any
) -> None:
    assert register(api).status_code == 201
    problem(register(api), 409, "identifier")
    other = OrganizationFactory()
    rival = client_for(StaffFactory(organization=other, role=MemberRole.OWNER))
    problem(register(rival), 409, "identifier")  # no squatting on another's server
    assert rival.get("/resources").json()["results"] == []


@pytest.mark.parametrize(
    "scopes",
    [
        [{"name": "tools call"}],
        [{"name": 'tools"call'}],
        [{"name": ""}],
        [{"name": "tools:call"}, {"name": "tools:call"}],
        [{"name": "tools:call", "extra": 1}],
        [{"name": "tools:call", "description": "x" * 501}],
        [{"name": 7}],
        "tools:call",
        [{"name": f"s{i}"} for i in range(51)],
    ],
)
def test_hostile_scopes_are_refused_and_nothing_is_stored(api: APIClient, scopes: Any) -> None:
    problem(register(api, scopes=scopes), 400)
    assert api.get("/resources").json()["results"] == []


@pytest.mark.parametrize(
    "fields",
    [
        {"access_token_lifetime": 0},
        {"access_token_lifetime": 10**12},
        {"access_token_lifetime": True},
        {"access_token_lifetime": "600"},
        {"signing_algorithm": "HS256"},
        {"signing_algorithm": "none"},
        {"dpop_required": "yes"},
        {"name": ""},
        {"owner": "someone"},
    ],
)
def test_hostile_fields_are_refused(api: APIClient, fields: dict[str, Any]) -> None:
    problem(register(api, **fields), 400)


def test_update_keeps_the_identifier_and_drops_undefined_scopes_from_grants(
    api: APIClient, org: Organization, cred: Credentialed, mcp: dict[str, Any]
) -> None:
    path = f"/resources/{mcp['id']}"
    problem(api.patch(path, {"identifier": "https://elsewhere.example/"}, format="json"), 400)
    changed = api.patch(path, {"scopes": [TOOLS[1]], "name": "Tools v2"}, format="json")
    assert changed.status_code == 200, changed.content
    assert changed.json()["name"] == "Tools v2"
    (held,) = api.get(f"{path}/grants").json()
    assert held["agent"] == str(cred.agent.id)
    assert held["scopes"] == []  # tools:call is gone with the scope
    assert events(org, "resource.updated")[0].data["changed"] == ["name", "scopes"]


def test_grants_name_only_the_resources_scopes_and_the_organizations_agents(
    api: APIClient, cred: Credentialed, mcp: dict[str, Any], foreign_agent: Any
) -> None:
    problem(grant(api, mcp["id"], cred.agent.id, ["tools:delete"]), 400, "scopes")
    problem(grant(api, mcp["id"], cred.agent.id, "tools:call"), 400, "scopes")
    problem(grant(api, mcp["id"], foreign_agent.id, ["tools:call"]), 404)
    problem(grant(api, mcp["id"], "not-a-uuid", ["tools:call"]), 400)
    problem(grant(api, "5f1c7d0e-0000-4000-8000-000000000000", cred.agent.id, ["tools:call"]), 404)
    assert grant(api, mcp["id"], cred.agent.id, []).status_code == 204
    assert api.get(f"/resources/{mcp['id']}/grants").json() == []
    role = api.put(f"/resources/{mcp['id']}/roles/admin", {"scopes": ["tools:list"]}, format="json")
    assert role.status_code == 200, role.content
    assert role.json()["role"] == "admin"
    problem(api.put(f"/resources/{mcp['id']}/roles/root", {"scopes": []}, format="json"), 400)


def test_another_organizations_resource_is_a_404(mcp: dict[str, Any], client_for: Any) -> None:
    rival = client_for(StaffFactory(organization=OrganizationFactory(), role=MemberRole.OWNER))
    for method, path in [
        ("get", f"/resources/{mcp['id']}"),
        ("get", f"/resources/{mcp['id']}/grants"),
        ("patch", f"/resources/{mcp['id']}"),
        ("delete", f"/resources/{mcp['id']}"),
    ]:
        problem(getattr(rival, method)(path, {"name": "x"}, format="json"), 404)
    problem(
        rival.put(f"/resources/{mcp['id']}/roles/admin", {"scopes": ["tools:call"]}, format="json"),
        404,
    )


def test_auditor_reads_the_registry_and_changes_nothing(
    org: Organization, mcp: dict[str, Any], client_for: Any
) -> None:
    auditor = client_for(StaffFactory(organization=org, role=MemberRole.AUDITOR))
    assert auditor.get(f"/resources/{mcp['id']}").status_code == 200
    problem(auditor.patch(f"/resources/{mcp['id']}", {"name": "x"}, format="json"), 403)
    problem(register(auditor, "https://other.example/"), 403)


# --- tokens for a registered resource --------------------------------------------------------


def test_token_for_a_registered_resource_names_it_with_its_scopes_lifetime_and_algorithm(
    api: APIClient, cred: Credentialed, mcp: dict[str, Any]
) -> None:
    api.patch(f"/resources/{mcp['id']}", {"signing_algorithm": "EdDSA"}, format="json")
    response = request_token(cred, resource=MCP)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["scope"] == "tools:call"  # the agent's grant, when it asks for none
    assert body["expires_in"] == 600
    header, token = jwt_parts(body["access_token"])
    assert header["alg"] == "EdDSA"
    assert token["aud"] == MCP
    assert token["scope"] == "tools:call"
    assert token["exp"] - token["iat"] == 600
    # The platform API does not take it: its audience is the resource.
    listed = HttpClient().get("/agents", HTTP_AUTHORIZATION=f"Bearer {body['access_token']}")
    assert listed.status_code == 401


def test_scopes_beyond_the_grant_or_the_platforms_are_invalid_scope(
    cred: Credentialed, mcp: dict[str, Any]
) -> None:
    for scope in ("tools:list", "tools:call agents:read", "openid"):
        response = request_token(cred, resource=MCP, scope=scope)
        assert response.status_code == 400, scope
        assert response.json()["error"] == "invalid_scope"


def test_an_agent_without_a_grant_gets_no_token_for_the_resource(
    org: Organization, mcp: dict[str, Any]
) -> None:
    stranger = credentialed(org)
    response = request_token(stranger, resource=MCP)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


def test_a_role_grant_reaches_every_agent_holding_the_role(
    api: APIClient, org: Organization, mcp: dict[str, Any]
) -> None:
    admin = credentialed(org)
    with tenant_context(org.id):
        OrganizationMember.objects.create(
            organization_id=org.id, agent=admin.agent, role=MemberRole.ADMIN
        )
    api.put(f"/resources/{mcp['id']}/roles/admin", {"scopes": ["tools:list"]}, format="json")
    response = request_token(admin, resource=MCP)
    assert response.status_code == 200, response.content
    assert response.json()["scope"] == "tools:list"


@pytest.mark.parametrize(
    "resource",
    [
        "https://unregistered.example/mcp",
        [MCP, "https://unregistered.example/mcp"],
        [MCP, api_audience()],
        "not-a-uri",
    ],
)
def test_anything_but_one_registered_resource_is_invalid_target_and_audited(
    org: Organization, cred: Credentialed, mcp: dict[str, Any], resource: Any
) -> None:
    response = request_token(cred, resource=resource)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_target"
    (event,) = events(org, "token.target_refused")
    assert event.outcome == "failure"
    assert event.subject_id == cred.client_id


def test_audience_parameter_is_checked_like_resource(
    cred: Credentialed, mcp: dict[str, Any]
) -> None:
    assert request_token(cred, audience="https://unregistered.example/").status_code == 400
    allowed = request_token(cred, audience=MCP)
    assert allowed.status_code == 200, allowed.content
    assert claims(allowed.json()["access_token"])["aud"] == MCP


def test_the_platform_api_stays_the_default_audience(cred: Credentialed) -> None:
    for extra in ({}, {"resource": api_audience()}):
        response = request_token(cred, scope="agents:read", **extra)
        assert response.status_code == 200, response.content
        assert claims(response.json()["access_token"])["aud"] == api_audience()


def test_an_agent_of_another_organization_never_gets_the_resources_audience(
    other_org: Organization, mcp: dict[str, Any]
) -> None:
    """The cross-tenant hole: B's agent asks for A's server, with and without ``resource``."""
    outsider = credentialed(other_org)
    response = request_token(outsider, resource=MCP, scope="tools:call")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_target"
    for extra in ({}, {"scope": "agents:read"}):
        token = request_token(outsider, **extra)
        assert token.status_code == 200, token.content
        assert claims(token.json()["access_token"])["aud"] == api_audience()
    assert len(events(other_org, "token.target_refused")) == 1


def test_a_resource_requiring_dpop_is_not_given_a_bearer_token(
    api: APIClient, cred: Credentialed, mcp: dict[str, Any]
) -> None:
    api.patch(f"/resources/{mcp['id']}", {"dpop_required": True}, format="json")
    response = request_token(cred, resource=MCP)
    assert response.status_code == 400
    assert "DPoP" in response.json()["error_description"]


def test_a_deleted_resource_is_no_longer_a_target(
    api: APIClient, org: Organization, cred: Credentialed, mcp: dict[str, Any]
) -> None:
    assert api.delete(f"/resources/{mcp['id']}").status_code == 204
    with tenant_context(org.id):
        assert not ResourceGrant.objects.filter(organization_id=org.id).exists()
    assert request_token(cred, resource=MCP).json()["error"] == "invalid_target"
    assert events(org, "resource.deleted")[0].data["identifier"] == MCP


def test_an_agent_with_resources_manage_registers_by_bearer_token(org: Organization) -> None:
    manager = credentialed(org, ["resources:manage"])
    token = agent_token(manager, scope="resources:manage")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    created = register(client)
    assert created.status_code == 201, created.content
    reader = credentialed(org, ["agents:read"])
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {agent_token(reader, scope='agents:read')}")
    problem(client.get("/resources"), 403)


# --- token exchange for a resource -----------------------------------------------------------


def test_exchange_for_a_resource_narrows_within_the_callers_grant(
    api: APIClient, org: Organization, cred: Credentialed, mcp: dict[str, Any]
) -> None:
    caller = credentialed(org)
    subject = request_token(cred, resource=MCP).json()["access_token"]
    # Not granted on the resource, the caller has nothing to be handed.
    refused(exchange(caller, subject, resource=MCP), "invalid_scope", "scope_not_delegable")
    grant(api, mcp["id"], caller.agent.id, ["tools:call", "tools:list"])
    given = exchange(caller, subject, resource=MCP)
    assert given.status_code == 200, given.content
    token = claims(given.json()["access_token"])
    assert token["aud"] == MCP
    assert token["scope"] == "tools:call"
    assert token["sub"] == str(cred.agent.id)
    assert token["act"]["sub"] == str(caller.agent.id)
    # Without resource= the token would be the platform API's, for which the subject holds
    # nothing: no scope is left.
    refused(exchange(caller, subject), "invalid_scope", "scope_not_delegable")


def test_exchange_does_not_widen_a_platform_token_to_a_resource(
    api: APIClient, org: Organization, cred: Credentialed, mcp: dict[str, Any]
) -> None:
    caller = credentialed(org)
    grant(api, mcp["id"], caller.agent.id, ["tools:call"])
    subject = agent_token(cred, scope="agents:read")
    refused(exchange(caller, subject, resource=MCP), "invalid_target", "audience_widened")
    assert len(events(org, "token.exchange_refused")) == 1


def test_a_resource_scope_named_like_the_platforms_opens_nothing_on_the_platform_api(
    api: APIClient, org: Organization
) -> None:
    """A partner deployment registered as a resource defines agents:write; a token for it is
    that deployment's, never this one's."""
    writer = credentialed(org)
    partner = register(api, "https://partner.example", scopes=[{"name": "agents:write"}]).json()
    grant(api, partner["id"], writer.agent.id, ["agents:write"])
    token = request_token(writer, resource="https://partner.example").json()["access_token"]
    assert claims(token)["scope"] == "agents:write"
    bearer = {"Authorization": f"Bearer {token}"}
    assert HttpClient().get("/agents", headers=bearer).status_code == 401
    created = HttpClient().post(
        "/agents", {"name": "x"}, content_type="application/json", headers=bearer
    )
    assert created.status_code == 401


def test_metadata_is_hosted_only_for_resources_that_ask(
    api: APIClient, org: Organization, client_for: Any
) -> None:
    """A server that cannot serve its own RFC 9728 document names the hosted one in its 401s:
    public, the registered identifier and scopes, this deployment as authorization server."""
    response = register(api, metadata_hosted=True, dpop_required=True)
    assert response.status_code == 201, response.content
    resource = response.json()
    url = resource["metadata_url"]
    assert (
        url == f"{agentidp_settings().issuer}/resources/{resource['id']}/oauth-protected-resource"
    )

    anonymous = HttpClient()
    served = anonymous.get(f"/resources/{resource['id']}/oauth-protected-resource")
    assert served.status_code == 200, served.content
    assert served["Cache-Control"] == "public, max-age=300"
    document = served.json()
    assert document["resource"] == MCP
    assert document["authorization_servers"] == [agentidp_settings().issuer]
    assert document["scopes_supported"] == ["tools:call", "tools:list"]
    assert document["resource_name"] == "Tools"
    assert document["dpop_bound_access_tokens_required"] is True
    assert events(org, "resource.created")[0].data["metadata_hosted"] is True

    # Another organization's resource that did not ask, an unknown id, a malformed one: 404.
    other = client_for(StaffFactory(organization=OrganizationFactory(), role=MemberRole.OWNER))
    theirs = register(other, "https://theirs.example.com/mcp")
    assert theirs.status_code == 201, theirs.content
    assert theirs.json()["metadata_url"] is None
    for path in (
        f"/resources/{theirs.json()['id']}/oauth-protected-resource",
        "/resources/00000000-0000-0000-0000-000000000000/oauth-protected-resource",
    ):
        problem(anonymous.get(path), 404)
    assert anonymous.get("/resources/not-a-uuid/oauth-protected-resource").status_code == 404
    assert (
        anonymous.post(f"/resources/{resource['id']}/oauth-protected-resource").status_code == 405
    )

    # Switched off, it is gone at once; an organization that is not active serves none.
    patched = api.patch(f"/resources/{resource['id']}", {"metadata_hosted": False}, format="json")
    assert patched.status_code == 200 and patched.json()["metadata_url"] is None
    problem(anonymous.get(f"/resources/{resource['id']}/oauth-protected-resource"), 404)
    hostile = api.patch(f"/resources/{resource['id']}", {"metadata_hosted": "maybe"}, format="json")
    problem(hostile, 400, "metadata_hosted")
    api.patch(f"/resources/{resource['id']}", {"metadata_hosted": True}, format="json")
    assert anonymous.get(f"/resources/{resource['id']}/oauth-protected-resource").status_code == 200
    with tenant_context(org.id):
        Organization.objects.filter(id=org.id).update(status=OrganizationStatus.SUSPENDED)
    problem(anonymous.get(f"/resources/{resource['id']}/oauth-protected-resource"), 404)
