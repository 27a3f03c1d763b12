"""One generic check for every endpoint: anonymous 401, missing scope 403, another
organization's object 404 (row unchanged), and the happy path."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from agentidp.tenancy import platform_context
from agents.models import Agent
from organizations.choices import MemberRole
from organizations.models import Organization
from tests.factories import AgentFactory, OrganizationFactory, StaffFactory


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # {agent} / {org} are filled with the target's ids
    body: dict[str, Any] = field(default_factory=dict)
    ok: int = 200
    platform: bool = False  # needs admin:orgs
    foreign_status: int = 404


ENDPOINTS = [
    Endpoint("get", "/agents"),
    Endpoint("post", "/agents", {"name": "matrix-new"}, ok=201),
    Endpoint("get", "/agents/{agent}"),
    Endpoint("patch", "/agents/{agent}", {"description": "changed"}),
    Endpoint("post", "/agents/{agent}/suspend", {"reason": "matrix"}),
    Endpoint("post", "/agents/{agent}/decommission"),
    Endpoint("get", "/agents/{agent}/credentials"),
    Endpoint("post", "/agents/{agent}/credentials", ok=201),
    Endpoint("get", "/agents/{agent}/scopes"),
    Endpoint("post", "/agents/{agent}/scopes", {"scopes": ["agents:read", "audit:read"]}),
    Endpoint("get", "/audit"),
    Endpoint("get", "/organizations/{org}/members"),
    Endpoint(
        "post", "/organizations/{org}/members", {"agent_id": "{agent}", "role": "admin"}, ok=201
    ),
    Endpoint("get", "/organizations", platform=True),
    Endpoint("post", "/organizations", {"slug": "matrix-org"}, ok=201, platform=True),
    Endpoint("get", "/organizations/{org}", platform=True, foreign_status=403),
    Endpoint(
        "patch", "/organizations/{org}", {"name": "Renamed"}, platform=True, foreign_status=403
    ),
    Endpoint("delete", "/organizations/{org}", ok=204, platform=True, foreign_status=403),
]
IDS = [f"{e.method.upper()} {e.path}" for e in ENDPOINTS]


def _fill(value: Any, agent: Agent) -> Any:
    if isinstance(value, str):
        return value.format(agent=agent.id, org=agent.organization_id)
    if isinstance(value, dict):
        return {k: _fill(v, agent) for k, v in value.items()}
    return value


def _call(client: APIClient, endpoint: Endpoint, agent: Agent) -> Any:
    method = getattr(client, endpoint.method)
    path = _fill(endpoint.path, agent)
    if endpoint.method in {"post", "patch"}:
        return method(path, _fill(endpoint.body, agent), format="json")
    return method(path)


@pytest.fixture
def target(org: Organization) -> Agent:
    return AgentFactory(organization=org, name="matrix-target")


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
def test_anonymous_is_401(endpoint: Endpoint, target: Agent) -> None:
    response = _call(APIClient(), endpoint, target)
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
def test_missing_scope_is_403(
    endpoint: Endpoint,
    target: Agent,
    org: Organization,
    client_for: Callable[[User | None], APIClient],
) -> None:
    # An auditor holds agents:read and audit:read only; platform endpoints need admin:orgs.
    caller: User = StaffFactory(organization=org, role=MemberRole.AUDITOR)
    write = endpoint.method != "get"
    if not (write or endpoint.platform):
        # read endpoints: a staff login with no membership holds no scope at all
        with platform_context(reason="tests"):
            caller = User.objects.create_user("no-scope-" + str(target.id)[:8], is_staff=True)
    response = _call(client_for(caller), endpoint, target)
    assert response.status_code == 403, response.content
    assert response.json()["title"] == "Forbidden"


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
def test_other_organizations_object_is_hidden(
    endpoint: Endpoint, target: Agent, client_for: Callable[[User | None], APIClient]
) -> None:
    outsider = StaffFactory(organization=OrganizationFactory(), role=MemberRole.OWNER)
    with platform_context(reason="tests"):
        before = Agent.objects.values().get(id=target.id)
        organization_before = Organization.objects.values().get(id=target.organization_id)
    response = _call(client_for(outsider), endpoint, target)
    if "{agent}" in endpoint.path or "{org}" in endpoint.path:
        assert response.status_code == endpoint.foreign_status, response.content
    else:
        # collection endpoints answer, but with nothing of the target's organization
        assert response.status_code in {200, 201, 403}
        body = response.json()
        results = body.get("results", []) if isinstance(body, dict) else []
        assert all(r.get("organization_id") != str(target.organization_id) for r in results)
        assert str(target.id) not in response.content.decode()
    with platform_context(reason="tests"):
        assert Agent.objects.values().get(id=target.id) == before
        assert Organization.objects.values().get(id=target.organization_id) == organization_before


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
def test_happy_path(
    endpoint: Endpoint,
    target: Agent,
    staff: User,
    superuser: User,
    client_for: Callable[[User | None], APIClient],
) -> None:
    if endpoint.method == "delete":
        with platform_context(reason="tests"):
            from organizations.services import organization_suspend
            from tests.factories import TEST_ACTOR

            organization_suspend(actor=TEST_ACTOR, organization_id=target.organization_id)
    user = superuser if endpoint.platform else staff
    response = _call(client_for(user), endpoint, target)
    assert response.status_code == endpoint.ok, response.content
