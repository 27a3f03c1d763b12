"""Staff register resources and grant their scopes in the admin, through the same services and
rules as the API: a refusal is a form error with nothing stored."""

import pytest
from django.contrib.auth.models import User
from django.test import Client

from agentidp.tenancy import tenant_context
from agents.models import Agent
from compliance.models import AuditEvent
from oidc.models import Resource, ResourceGrant
from organizations.choices import MemberRole
from organizations.models import Organization
from tests.factories import StaffFactory
from tests.platform.test_admin import _login

pytestmark = pytest.mark.django_db

ADD = "/admin/oidc/resource/add/"


def _add(client: Client, identifier: str, scopes: str = "tools:call Call the tools") -> str:
    response = client.post(
        ADD,
        {"identifier": identifier, "name": "Tools", "scopes_lines": scopes,
         "access_token_lifetime": "600", "signing_algorithm": "ES256"},
    )  # fmt: skip
    return response.content.decode() if response.status_code == 200 else ""


def _resources(org: Organization) -> list[Resource]:
    with tenant_context(org.id):
        return list(Resource.objects.filter(organization_id=org.id))


def test_staff_registers_a_resource_with_its_scopes(staff: User, org: Organization) -> None:
    client = _login(staff)
    assert (
        _add(client, "https://mcp.example.com/mcp", "tools:call Call the tools\ntools:list") == ""
    )
    (resource,) = _resources(org)
    assert resource.scopes == [
        {"name": "tools:call", "description": "Call the tools"},
        {"name": "tools:list", "description": ""},
    ]
    assert resource.access_token_lifetime == 600
    page = client.get(f"/admin/oidc/resource/{resource.id}/change/").content.decode()
    assert "tools:call Call the tools" in page  # the scopes as they were typed
    with tenant_context(org.id):
        assert AuditEvent.objects.filter(action="resource.created").count() == 1


@pytest.mark.parametrize(
    ("identifier", "scopes", "error"),
    [
        ("http://mcp.example.com/", "tools:call", "https"),
        ("https://mcp.example.com/#x", "tools:call", "fragment"),
        ("https://mcp.example.com/", 'tools"call', "RFC 6749"),
        ("https://mcp.example.com/", "tools:call\ntools:call", "twice"),
    ],
)
def test_a_refused_registration_is_a_form_error_and_nothing_is_stored(
    staff: User, org: Organization, identifier: str, scopes: str, error: str
) -> None:
    page = _add(_login(staff), identifier, scopes)
    assert error in page
    assert _resources(org) == []


def test_staff_grants_an_agent_scopes_of_the_resource(
    staff: User, org: Organization, agent: Agent, other_org: Organization
) -> None:
    client = _login(staff)
    _add(client, "https://mcp.example.com/mcp")
    (resource,) = _resources(org)
    form = client.get("/admin/oidc/resourcegrant/add/").content.decode()
    assert resource.identifier in form
    refused = client.post(
        "/admin/oidc/resourcegrant/add/",
        {"resource": str(resource.id), "agent": str(agent.id), "scopes_text": "tools:delete"},
    )
    assert refused.status_code == 200 and "Not scopes of this resource" in refused.content.decode()
    done = client.post(
        "/admin/oidc/resourcegrant/add/",
        {"resource": str(resource.id), "agent": str(agent.id), "scopes_text": "tools:call"},
    )
    assert done.status_code == 302, done.content.decode()[:2000]
    with tenant_context(org.id):
        (grant,) = ResourceGrant.objects.filter(organization_id=org.id)
    assert (grant.agent_id, grant.scopes) == (agent.id, ["tools:call"])
    # another organization's staff see neither
    outsider = _login(StaffFactory(organization=other_org, role=MemberRole.OWNER))
    assert outsider.get(f"/admin/oidc/resource/{resource.id}/change/").status_code in {302, 404}
    assert resource.identifier not in outsider.get("/admin/oidc/resourcegrant/").content.decode()
