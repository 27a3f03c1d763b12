"""Federation partners in the admin, through a real staff login: registered through the
service (a partner that fails its checks is a form error and nothing is stored), its keys'
last fetch shown, refetch, suspend and reactivate, and only the staff's own organization."""

from typing import Any

from django.contrib.auth.models import User
from django.test import Client

from agentidp.tenancy import tenant_context
from compliance.models import AuditEvent
from federation.models import FederationPartner
from organizations.choices import MemberRole
from organizations.models import Organization
from tests.factories import StaffFactory
from tests.federation.conftest import MiniIssuer, new_key
from tests.federation.test_exchange import bearer, exchange, granted
from tests.platform.test_admin import _login

PARTNERS = "/admin/federation/federationpartner/"


def _add(client: Client, issuer: MiniIssuer, **extra: str) -> str:
    body = {"issuer": issuer.issuer, "jwks_uri": "", "did": "", "allowed_organizations": "",
            "allowed_scopes": ["agents:read"], "read_only": "on", "expires_at_0": "",
            "expires_at_1": "", "notes": "from the admin", **extra}  # fmt: skip
    response = client.post(f"{PARTNERS}add/", body)
    return str(response.status_code) + response.content.decode()


def _partner(org: Organization) -> FederationPartner:
    with tenant_context(org.id):
        return FederationPartner.objects.get(organization_id=org.id)


def test_add_registers_through_the_service_and_lists_the_fetch(
    staff: User, org: Organization, mini_issuer: MiniIssuer
) -> None:
    client = _login(staff)
    assert _add(client, mini_issuer).startswith("302")
    partner = _partner(org)
    assert partner.allowed_scopes == ["agents:read"] and partner.created_by
    listing = client.get(PARTNERS).content.decode()
    assert mini_issuer.issuer in listing and "active" in listing and "ok" in listing
    detail = client.get(f"{PARTNERS}{partner.id}/change/").content.decode()
    assert "ec-1" in detail  # the keys' kids
    assert mini_issuer.issuer in detail and f"{mini_issuer.issuer}/jwks" in detail


def test_a_partner_failing_its_checks_is_a_form_error(
    staff: User, org: Organization, mini_issuer: MiniIssuer
) -> None:
    mini_issuer.jwks = b'{"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}'
    page = _add(_login(staff), mini_issuer)
    assert page.startswith("200") and "symmetric" in page
    with tenant_context(org.id):
        assert not FederationPartner.objects.filter(organization_id=org.id).exists()


def test_actions_refetch_suspend_and_reactivate(
    staff: User, org: Organization, mini_issuer: MiniIssuer
) -> None:
    client = _login(staff)
    _add(client, mini_issuer)
    partner = _partner(org)
    mini_issuer.keys.append(new_key("EC", "ec-2"))
    selected = {"_selected_action": [str(partner.id)]}
    assert client.post(PARTNERS, {"action": "refetch_keys", **selected}).status_code == 302
    asked = client.post(PARTNERS, {"action": "suspend", **selected}).content.decode()
    assert "Suspend the selected partners?" in asked and "0 local tokens" in asked
    assert _partner(org).effective_status() == "active"  # nothing before the answer
    suspended = client.post(PARTNERS, {"action": "suspend", "confirmed": "yes", **selected})
    assert suspended.status_code == 302
    partner = _partner(org)
    assert [k["kid"] for k in partner.jwks["keys"]] == ["ec-1", "ec-2"]
    assert partner.effective_status() == "suspended"
    client.post(PARTNERS, {"action": "reactivate", "_selected_action": [str(partner.id)]})
    assert _partner(org).effective_status() == "active"
    changed = client.post(
        f"{PARTNERS}{partner.id}/change/",
        {"status": "suspended", "allowed_organizations": "remote-org",
         "allowed_scopes": ["agents:read", "audit:read"], "read_only": "on",
         "expires_at_0": "", "expires_at_1": "", "notes": "changed"},
    )  # fmt: skip
    assert changed.status_code == 302, changed.content.decode()[:3000]
    partner = _partner(org)
    assert partner.status == "suspended" and partner.allowed_organizations == ["remote-org"]
    assert partner.allowed_scopes == ["agents:read", "audit:read"] and partner.notes == "changed"


def test_only_managers_of_the_organization_see_partners(
    staff: User, org: Organization, other_org: Organization, mini_issuer: MiniIssuer
) -> None:
    _add(_login(staff), mini_issuer)
    partner = _partner(org)
    stranger = _login(StaffFactory(organization=other_org, role="owner"))
    assert mini_issuer.issuer not in stranger.get(PARTNERS).content.decode()
    assert stranger.get(f"{PARTNERS}{partner.id}/change/").status_code == 302
    member = _login(StaffFactory(organization=org, role="member"))
    assert member.get(PARTNERS).status_code == 403


def test_deleting_a_partner_says_what_stops_and_stops_it(
    staff: User, org: Organization, mini_issuer: MiniIssuer
) -> None:
    client = _login(staff)
    assert _add(client, mini_issuer).startswith("302")
    partner = _partner(org)
    exchanged = [granted(exchange(mini_issuer.token())) for _ in range(2)]
    assert all(bearer(t).get("/agents").status_code == 200 for t in exchanged)
    page = f"{PARTNERS}{partner.id}/"
    assert 'value="delete_selected"' not in client.get(PARTNERS).content.decode()
    asked = client.get(f"{page}delete/").content.decode()
    assert (
        f"{mini_issuer.issuer}: its tokens are refused from now on, and the 2 local tokens" in asked
    )
    assert all(bearer(t).get("/agents").status_code == 200 for t in exchanged)  # not yet
    assert client.post(f"{page}delete/", {"confirmed": "yes"}).status_code == 302
    assert all(bearer(t).get("/agents").status_code == 401 for t in exchanged)
    assert exchange(mini_issuer.token()).status_code == 400
    with tenant_context(org.id):
        (removed,) = AuditEvent.objects.filter(
            organization_id=org.id, action="federation.partner_removed"
        )
    assert removed.data["actor"]["username"] == staff.username


def test_an_auditor_sees_partners_and_their_key_fetches_read_only(
    staff: User, org: Organization, mini_issuer: MiniIssuer
) -> None:
    assert _add(_login(staff), mini_issuer).startswith("302")
    partner = _partner(org)
    auditor = _login(StaffFactory(organization=org, role=MemberRole.AUDITOR))
    listing = auditor.get(PARTNERS).content.decode()
    assert mini_issuer.issuer in listing and "ok" in listing and 'name="action"' not in listing
    detail = auditor.get(f"{PARTNERS}{partner.id}/change/").content.decode()
    assert "ec-1" in detail and 'name="_save"' not in detail
    assert auditor.post(f"{PARTNERS}{partner.id}/delete/", {"confirmed": "yes"}).status_code == 404
    assert _partner(org).id == partner.id


def test_the_partner_page_lists_the_resources_shared_with_it(
    staff: User, org: Organization, mini_issuer: MiniIssuer, api: Any
) -> None:
    client = _login(staff)
    assert _add(client, mini_issuer).startswith("302")
    partner = _partner(org)
    detail = client.get(f"{PARTNERS}{partner.id}/change/").content.decode()
    assert "resources shared" in detail.lower() and "none" in detail
    resource = api.post(
        "/resources", {"identifier": "https://mcp.example.com/mcp", "name": "Tools",
                       "scopes": [{"name": "tools:call"}]}, format="json",
    ).json()  # fmt: skip
    path = f"/federation/partners/{partner.id}/resources/{resource['id']}"
    assert api.put(path, {"scopes": ["tools:call"]}, format="json").status_code == 200
    detail = client.get(f"{PARTNERS}{partner.id}/change/").content.decode()
    assert "https://mcp.example.com/mcp (tools:call)" in detail
