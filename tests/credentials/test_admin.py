"""Client secrets in the admin, through a real staff login: listed without secrets, rotated
(the new secret shown once) and revoked through the services, and only in the staff's own
organization."""

import uuid
from typing import cast

import pytest
from django.contrib.auth.models import User
from django.http import HttpResponse
from django.test import Client

from agentidp.tenancy import tenant_context
from compliance.models import AuditEvent
from credentials.models import Client as Client_
from credentials.models import ClientSecret
from organizations.models import Organization
from tests.oidc.conftest import Credentialed, basic, credentialed, jwt_parts, request_token
from tests.platform.test_admin import _login, shown_once

CHANGELIST = "/admin/credentials/clientsecret/"


@pytest.fixture
def cred(org: Organization) -> Credentialed:
    return credentialed(org)


def _act(client: Client, action: str, *ids: object) -> HttpResponse:
    data = {"action": action, "_selected_action": [str(i) for i in ids]}
    return cast(HttpResponse, client.post(CHANGELIST, data))


def _events(organization_id: uuid.UUID, action: str) -> list[AuditEvent]:
    with tenant_context(organization_id):
        return list(AuditEvent.objects.filter(organization_id=organization_id, action=action))


def test_the_list_shows_prefixes_never_secrets_or_digests(
    staff: User, cred: Credentialed, other_org: Organization
) -> None:
    foreign = credentialed(other_org)
    page = _login(staff).get(CHANGELIST).content.decode()
    with tenant_context(cred.agent.organization_id):
        secret = ClientSecret.objects.get(id=cred.credential_id)
    assert secret.prefix in page
    assert cred.secret not in page
    assert secret.digest_index not in page and secret.digest_ciphertext not in page
    assert foreign.client_id not in page
    detail = _login(staff).get(f"{CHANGELIST}{cred.credential_id}/change/").content.decode()
    assert secret.prefix in detail
    assert secret.digest_index not in detail and secret.digest_ciphertext not in detail


def test_rotate_shows_the_new_secret_once_and_keeps_the_old_one_for_the_grace(
    staff: User, cred: Credentialed, org: Organization
) -> None:
    client = _login(staff)
    response = _act(client, "rotate", cred.credential_id)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    page = response.content.decode()
    shown = shown_once(page)
    new_secret = shown["client_secret"]
    assert shown["client_id"] == cred.client_id
    assert new_secret != cred.secret and len(new_secret) >= 40
    assert request_token(auth=basic(cred.client_id, new_secret)).status_code == 200
    assert request_token(cred).status_code == 200  # the old one, within its grace period
    assert new_secret not in client.get(CHANGELIST).content.decode()
    (event,) = _events(org.id, "credential.rotated")
    assert event.actor_id == str(staff.id) and new_secret not in str(event.data)


def test_revoke_stops_the_secret_at_once(
    staff: User, cred: Credentialed, org: Organization
) -> None:
    assert request_token(cred).status_code == 200
    client = _login(staff)
    asked = _act(client, "revoke", cred.credential_id).content.decode()
    assert "Revoke the selected secrets?" in asked and "Revokes 1 secret now" in asked
    assert "Revokes 1 live token" in asked  # the one just issued
    assert request_token(cred).status_code == 200  # nothing before the answer
    data = {"action": "revoke", "_selected_action": [str(cred.credential_id)], "confirmed": "yes"}
    assert client.post(CHANGELIST, data).status_code == 302
    assert request_token(cred).status_code == 401
    assert len(_events(org.id, "credential.revoked")) == 1


def test_staff_cannot_act_on_another_organizations_secret(
    staff: User, other_org: Organization
) -> None:
    foreign = credentialed(other_org)
    _act(_login(staff), "revoke", foreign.credential_id)
    _act(_login(staff), "rotate", foreign.credential_id)
    assert request_token(foreign).status_code == 200
    assert _events(other_org.id, "credential.revoked") == []
    assert _events(other_org.id, "credential.rotated") == []


def test_the_admin_sets_the_clients_id_token_and_agent_info_algorithms(
    superuser: User, org: Organization
) -> None:
    oidc = credentialed(org, scopes=["openid", "agents:read"])
    with tenant_context(org.id):
        pk = Client_.objects.get(client_id=oidc.client_id).pk
    admin = _login(superuser)
    page = admin.get(f"/admin/credentials/client/{pk}/change/").content.decode()
    assert "id_token_signed_response_alg" in page and "userinfo_signed_response_alg" in page
    response = admin.post(
        f"/admin/credentials/client/{pk}/change/",
        {
            "allowed_scopes": "agents:read,openid",
            "id_token_signed_response_alg": "EdDSA",
            "userinfo_signed_response_alg": "ES256",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    body = request_token(oidc, scope="openid").json()
    assert jwt_parts(body["id_token"])[0]["alg"] == "EdDSA"
    changed = _events(org.id, "credential.client_changed")
    assert changed and changed[-1].data == {
        "id_token_signed_response_alg": "EdDSA",
        "userinfo_signed_response_alg": "ES256",
        "actor": {"username": superuser.username, "role": "platform"},  # who, by name
    }
    info = Client().get("/agent-info", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert info["Content-Type"] == "application/jwt"
    assert jwt_parts(info.content.decode())[0]["alg"] == "ES256"
