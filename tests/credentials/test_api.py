"""The credentials API: a secret is shown exactly once; metadata only afterwards."""

import json
from io import StringIO
from typing import Any

from django.core.management import call_command
from rest_framework.test import APIClient

from agentidp.tenancy import tenant_context
from agents.models import Agent
from compliance.models import AuditEvent
from credentials.models import ClientSecret
from organizations.choices import MemberRole
from organizations.models import Organization
from tests.factories import StaffFactory
from tests.oidc.conftest import Credentialed, basic, request_token


def test_generate_shows_the_secret_once(api: APIClient, agent: Agent, org: Organization) -> None:
    url = f"/agents/{agent.id}/credentials"
    response = api.post(url, {}, format="json")
    assert response.status_code == 201, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    secret = body["client_secret"]
    assert secret.startswith("ais_") and len(secret) >= 47
    assert body["client_id"] == str(agent.id)
    assert body["credential"]["prefix"] == secret[:12]
    listed = api.get(url)
    assert secret not in listed.content.decode()
    assert [c["status"] for c in listed.json()] == ["active"]
    assert "digest" not in listed.json()[0]
    with tenant_context(org.id):
        stored = ClientSecret.objects.get(id=body["credential"]["id"])
        events = AuditEvent.objects.filter(organization_id=org.id, action="credential.generated")
        assert secret not in stored.digest_ciphertext + stored.digest_index
        assert all(secret not in json.dumps(e.data) for e in events)
    cred = Credentialed(agent, body["client_id"], secret, stored.id)
    assert request_token(cred).status_code == 200


def test_rotate_and_revoke(api: APIClient, agent: Agent) -> None:
    url = f"/agents/{agent.id}/credentials"
    first = api.post(url, {}, format="json").json()
    rotated = api.post(
        f"{url}/{first['credential']['id']}/rotate", {"grace_seconds": 60}, format="json"
    )
    assert rotated.status_code == 201
    statuses = {c["id"]: c["status"] for c in api.get(url).json()}
    assert statuses[first["credential"]["id"]] == "rotating"
    assert statuses[rotated.json()["credential"]["id"]] == "active"
    again = api.post(f"{url}/{first['credential']['id']}/rotate", {}, format="json")
    assert again.status_code == 409
    assert api.delete(f"{url}/{first['credential']['id']}").status_code == 204
    assert api.delete(f"{url}/{first['credential']['id']}").status_code == 409
    old = Credentialed(agent, first["client_id"], first["client_secret"], None)
    assert request_token(old).status_code == 401


def test_bad_input(api: APIClient, agent: Agent) -> None:
    url = f"/agents/{agent.id}/credentials"
    past = api.post(url, {"expires_at": "2000-01-01T00:00:00Z"}, format="json")
    assert past.status_code == 400 and "expires_at" in past.json()["errors"]
    assert api.post(url, {"expires_at": "soon"}, format="json").status_code == 400
    assert api.post(url, {"secret": "mine"}, format="json").status_code == 400
    created = api.post(url, {}, format="json").json()["credential"]["id"]
    bad = api.post(f"{url}/{created}/rotate", {"grace_seconds": -1}, format="json")
    assert bad.status_code == 400 and "grace_seconds" in bad.json()["errors"]
    assert api.delete(f"{url}/not-a-uuid").status_code == 400
    assert api.delete(f"{url}/00000000-0000-0000-0000-000000000000").status_code == 404


def test_expiring_secret_stops_working(api: APIClient, agent: Agent, org: Organization) -> None:
    body = api.post(f"/agents/{agent.id}/credentials", {}, format="json").json()
    with tenant_context(org.id):
        from django.utils import timezone

        ClientSecret.objects.filter(id=body["credential"]["id"]).update(expires_at=timezone.now())
    response = request_token(auth=basic(body["client_id"], body["client_secret"]))
    assert response.status_code == 401


def test_foreign_agent_is_404(api: APIClient, foreign_agent: Agent) -> None:
    assert api.post(f"/agents/{foreign_agent.id}/credentials", {}, format="json").status_code == 404
    assert api.get(f"/agents/{foreign_agent.id}/credentials").status_code == 404


def test_scopes_endpoint(api: APIClient, agent: Agent) -> None:
    url = f"/agents/{agent.id}/scopes"
    assert api.get(url).json() == {"scopes": ["agents:read"]}
    response = api.post(url, {"scopes": ["audit:read", "agents:read"]}, format="json")
    assert response.json() == {"scopes": ["agents:read", "audit:read"]}
    bad = api.post(url, {"scopes": ["admin:orgs"]}, format="json")
    assert bad.status_code == 400 and "scopes[0]" in bad.json()["errors"]
    assert api.post(url, {"scopes": ["root"]}, format="json").status_code == 400


def test_decommissioned_agent_cannot_get_credentials(api: APIClient, agent: Agent) -> None:
    api.post(f"/agents/{agent.id}/decommission")
    assert api.post(f"/agents/{agent.id}/credentials", {}, format="json").status_code == 409


def test_createagent_with_credentials(org: Organization) -> None:
    StaffFactory(organization=org, role=MemberRole.OWNER)  # who sponsors it
    out = StringIO()
    call_command(
        "createagent", "--org", org.slug, "cli-agent", "--with-credentials",
        "--scope", "agents:read", "--scope", "audit:read", stdout=out,
    )  # fmt: skip
    printed: dict[str, Any] = json.loads(out.getvalue())
    assert printed["client_id"] == printed["id"] and printed["client_secret"].startswith("ais_")
    cred = Credentialed(None, printed["client_id"], printed["client_secret"], None)  # type: ignore[arg-type]
    response = request_token(cred)
    assert response.status_code == 200 and response.json()["scope"] == "agents:read audit:read"


def test_last_used_is_reported_and_persisted(
    api: APIClient, agent: Agent, org: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    from credentials.tasks import credential_last_used_persist_task

    body = api.post(f"/agents/{agent.id}/credentials", {}, format="json").json()
    assert api.get(f"/agents/{agent.id}/credentials").json()[0]["last_used_at"] is None
    cred = Credentialed(agent, body["client_id"], body["client_secret"], None)
    with django_capture_on_commit_callbacks(execute=True):
        assert request_token(cred).status_code == 200
    assert api.get(f"/agents/{agent.id}/credentials").json()[0]["last_used_at"] is not None
    assert credential_last_used_persist_task(str(org.id)) == 1
    with tenant_context(org.id):
        assert ClientSecret.objects.get(id=body["credential"]["id"]).last_used_at is not None
