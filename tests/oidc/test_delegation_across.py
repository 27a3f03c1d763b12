"""Token exchange across organizations, only through a federation trust that allows it: the
organization whose agent is acted for registers this deployment's own issuer as a partner,
lists the acting organization, allows delegation and caps the scopes; its agent's policy
names the foreign agent. Every other combination is refused as an attack would be, and the
tree still ends with its root, in both organizations. Through HTTP and the real database."""

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client as HttpClient
from rest_framework.test import APIClient

from agentidp.conf import agentidp_settings
from agentidp.tenancy import tenant_context
from compliance.models import AuditEvent
from oidc.models import AccessToken, RevokedToken
from tests.factories import OrganizationFactory, StaffFactory
from tests.oidc.conftest import (
    DELEGATION_SCOPES,
    FORM,
    Credentialed,
    basic,
    claims,
    credentialed,
    exchange,
    refused,
)
from tests.oidc.conftest import agent_token as token_for
from tests.oidc.test_status_list import eventually_revoked

SCOPES = DELEGATION_SCOPES


def accepted(token: str) -> bool:
    return HttpClient().get("/agents", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200


class Pair:
    """Organization X, whose agent A is acted for, and Y, whose agents B and C act."""

    def __init__(self, client_for: Callable[..., APIClient]) -> None:
        self.x, self.y = OrganizationFactory(), OrganizationFactory()
        self.a = credentialed(self.x, SCOPES)
        self.b, self.c = credentialed(self.y, SCOPES), credentialed(self.y, SCOPES)
        self.x_admin = client_for(StaffFactory(organization=self.x, role="admin"))
        self.y_admin = client_for(StaffFactory(organization=self.y, role="admin"))

    def trust(self, **body: Any) -> Any:
        payload = {
            "issuer": agentidp_settings().issuer, "allowed_organizations": [str(self.y.id)],
            "allowed_scopes": ["agents:read", "agents:write"], "allow_delegation": True,
            **body,
        }  # fmt: skip
        return self.x_admin.post("/federation/trust", payload, format="json")

    def policy(self, actors: Any) -> Any:
        return self.x_admin.put(
            f"/agents/{self.a.agent.id}/delegation", {"actors": actors}, format="json"
        )


@pytest.fixture
def pair(client_for: Callable[..., APIClient]) -> Pair:
    return Pair(client_for)


def test_without_a_trust_a_foreign_agent_is_refused_and_cannot_be_named(pair: Pair) -> None:
    root = token_for(pair.a)
    refused(exchange(pair.b, root), "invalid_grant", "foreign_subject")
    assert pair.policy([str(pair.b.agent.id)]).status_code == 404  # names nothing here
    # a trust that does not allow delegation is no trust for it
    assert pair.trust(allow_delegation=False).status_code == 201
    refused(exchange(pair.b, root), "invalid_grant", "foreign_subject")
    assert pair.policy([str(pair.b.agent.id)]).status_code == 404
    with tenant_context(pair.y.id):
        assert AuditEvent.objects.filter(
            organization_id=pair.y.id, action="token.exchange_refused",
            data__reason="foreign_subject",
        ).count() == 2  # fmt: skip


def test_a_remote_partner_cannot_allow_delegation(pair: Pair) -> None:
    response = pair.x_admin.post(
        "/federation/trust",
        {"issuer": "https://partner.example", "allowed_scopes": ["agents:read"],
         "allow_delegation": True},
        format="json",
    )  # fmt: skip
    assert response.status_code == 400, response.content
    assert "allow_delegation" in response.json()["errors"]


def test_a_trusted_organizations_named_agent_acts_within_the_trusts_scopes(pair: Pair) -> None:
    assert pair.trust(allowed_scopes=["agents:read"]).status_code == 201, pair.trust
    root = token_for(pair.a)
    # "*" is any agent of X's own: a foreign agent must be named
    refused(exchange(pair.b, root), "invalid_grant", "not_allowed_to_act")
    named = pair.policy([str(pair.b.agent.id)])
    assert named.status_code == 200, named.content
    assert named.json()["actors"] == [str(pair.b.agent.id)]
    refused(exchange(pair.b, root, scope="agents:write"), "invalid_scope", "scope_not_delegable")
    given = exchange(pair.b, root)
    assert given.status_code == 200, given.content
    body = given.json()
    assert body["scope"] == "agents:read"  # the trust's cap
    at_b = claims(body["access_token"])
    assert at_b["sub"] == str(pair.a.agent.id) and at_b["organization_id"] == str(pair.x.id)
    assert at_b["act"] == {
        "sub": str(pair.b.agent.id), "client_id": pair.b.client_id,
        "organization_id": str(pair.y.id),
    }  # fmt: skip
    # it reads X's API as A, acted by B
    listed = HttpClient().get("/agents", HTTP_AUTHORIZATION=f"Bearer {body['access_token']}")
    assert listed.status_code == 200
    assert str(pair.a.agent.id) in {a["id"] for a in listed.json()["results"]}
    # both organizations keep a record: Y of the token its agent got, X of who acts for A
    with tenant_context(pair.y.id):
        issued = AuditEvent.objects.get(organization_id=pair.y.id, subject_id=at_b["jti"])
        row = AccessToken.objects.get(jti=at_b["jti"])
    with tenant_context(pair.x.id):
        delegated = AuditEvent.objects.get(organization_id=pair.x.id, subject_id=at_b["jti"])
    assert issued.action == "token.issued" and issued.data["organization_id"] == str(pair.x.id)
    assert delegated.action == "token.delegated"
    assert delegated.data["caller_organization_id"] == str(pair.y.id)
    assert str(row.parent_jti) == claims(root)["jti"]


def test_the_trust_must_list_the_acting_organization(pair: Pair) -> None:
    other = OrganizationFactory()
    assert pair.trust(allowed_organizations=[str(other.id)]).status_code == 201
    refused(exchange(pair.b, token_for(pair.a)), "invalid_grant", "foreign_subject")


def test_revoking_the_root_ends_the_tree_in_both_organizations(pair: Pair) -> None:
    assert pair.trust().status_code == 201
    assert pair.policy([str(pair.b.agent.id)]).status_code == 200
    root = token_for(pair.a)
    at_b = exchange(pair.b, root).json()["access_token"]
    # Y's C, from B's: A's policy decides again, and names only B
    refused(exchange(pair.c, at_b), "invalid_grant", "not_allowed_to_act")
    assert pair.policy([str(pair.b.agent.id), str(pair.c.agent.id)]).status_code == 200
    at_c = exchange(pair.c, at_b).json()["access_token"]
    assert claims(at_c)["act"]["act"]["sub"] == str(pair.b.agent.id)
    assert accepted(at_b) and accepted(at_c)
    revoked = HttpClient().post(
        "/oauth2/revoke", f"token={root}", FORM,
        HTTP_AUTHORIZATION=basic(pair.a.client_id, pair.a.secret),
    )  # fmt: skip
    assert revoked.status_code == 200
    assert not accepted(at_b) and not accepted(at_c)
    with tenant_context(pair.y.id):
        in_y = set(RevokedToken.objects.values_list("jti", "reason"))
    assert in_y == {
        (uuid.UUID(claims(at_b)["jti"]), "lineage"), (uuid.UUID(claims(at_c)["jti"]), "lineage")
    }  # fmt: skip
    eventually_revoked(at_b)  # offline verifiers see it in the status list too
    eventually_revoked(at_c)


def test_withdrawing_the_trust_stops_the_tokens_it_allowed(pair: Pair) -> None:
    created = pair.trust()
    assert created.status_code == 201
    assert pair.policy([str(pair.b.agent.id)]).status_code == 200
    at_b = exchange(pair.b, token_for(pair.a)).json()["access_token"]
    assert accepted(at_b)
    suspended = pair.x_admin.patch(
        f"/federation/partners/{created.json()['id']}", {"status": "suspended"}, format="json"
    )
    assert suspended.status_code == 200, suspended.content
    assert not accepted(at_b)
    refused(exchange(pair.b, token_for(pair.a)), "invalid_grant", "foreign_subject")


def test_the_acting_agent_stopping_stops_the_token(pair: Pair) -> None:
    assert pair.trust().status_code == 201
    assert pair.policy([str(pair.b.agent.id)]).status_code == 200
    at_b = exchange(pair.b, token_for(pair.a)).json()["access_token"]
    assert accepted(at_b)
    suspended = pair.y_admin.post(f"/agents/{pair.b.agent.id}/suspend", {}, format="json")
    assert suspended.status_code == 200, suspended.content
    assert not accepted(at_b)


def test_the_other_organization_sees_none_of_the_subjects_rows(pair: Pair) -> None:
    """Y's staff, holding B's token recorded in Y, still cannot read X's agents or tokens."""
    assert pair.trust().status_code == 201
    assert pair.policy([str(pair.b.agent.id)]).status_code == 200
    exchange(pair.b, token_for(pair.a))
    assert pair.y_admin.get(f"/agents/{pair.a.agent.id}").status_code == 404
    with tenant_context(pair.y.id):
        assert not AccessToken.objects.filter(organization_id=pair.x.id).exists()


def test_staff_name_a_trusted_organizations_agent_in_the_admin(pair: Pair) -> None:
    page = f"/admin/agents/agent/{pair.a.agent.id}/delegation/"
    untrusted = pair.x_admin.post(page, {"trusted_actors": str(pair.b.agent.id)})
    assert untrusted.status_code == 200 and "No such agent" in untrusted.content.decode()
    garbage = pair.x_admin.post(page, {"trusted_actors": "not-an-id\n'; DROP TABLE x"})
    assert garbage.status_code == 200
    assert "Agent ids (UUIDs), one per line." in garbage.content.decode()
    # the trust, registered in the admin as staff would
    added = pair.x_admin.post(
        "/admin/federation/federationpartner/add/",
        {"issuer": agentidp_settings().issuer, "allowed_organizations": str(pair.y.id),
         "allowed_scopes": ["agents:read"], "allow_delegation": "on", "notes": ""},
    )  # fmt: skip
    assert added.status_code == 302, added.content.decode()[-3000:]
    saved = pair.x_admin.post(page, {"trusted_actors": f"{pair.b.agent.id}\n"})
    assert saved.status_code == 302, saved.content.decode()[-2000:]
    assert pair.x_admin.get(f"/agents/{pair.a.agent.id}/delegation").json()["actors"] == [
        str(pair.b.agent.id)
    ]
    assert str(pair.b.agent.id) in pair.x_admin.get(page).content.decode()  # shown again
    at_b = exchange(pair.b, token_for(pair.a)).json()["access_token"]
    with tenant_context(pair.y.id):
        row = AccessToken.objects.get(jti=claims(at_b)["jti"])
    chain = pair.y_admin.get(f"/admin/oidc/accesstoken/{row.pk}/change/")
    assert chain.status_code == 200
    assert "a token not kept here: another organization" in chain.content.decode()


def test_a_partner_that_is_this_deployment_uses_its_own_keys(pair: Pair) -> None:
    """Nothing is fetched over the network: its keys are the deployment's own, read again on a
    refresh (the JWKS kids), and it cannot take a jwks_uri or did of its own."""
    created = pair.trust()
    assert created.status_code == 201, created.content
    partner = created.json()
    own = {key["kid"] for key in HttpClient().get("/.well-known/jwks.json").json()["keys"]}
    assert {key["kid"] for key in partner["keys"]} == own and partner["allow_delegation"]
    refreshed = pair.x_admin.post(f"/federation/partners/{partner['id']}/refresh-keys")
    assert refreshed.status_code == 200, refreshed.content
    assert {key["kid"] for key in refreshed.json()["keys"]} == own
    assert refreshed.json()["last_fetch_result"] == "ok"
    other = OrganizationFactory()
    other_admin = APIClient()
    other_admin.force_login(StaffFactory(organization=other, role="admin"))
    with_uri = other_admin.post(
        "/federation/trust",
        {"issuer": agentidp_settings().issuer, "allowed_scopes": ["agents:read"],
         "jwks_uri": "https://elsewhere.example/jwks.json"},
        format="json",
    )  # fmt: skip
    assert with_uri.status_code == 400 and "issuer" in with_uri.json()["errors"]
    # allow_delegation can be turned off and on again on it, and only on it
    url = f"/federation/partners/{partner['id']}"
    off = pair.x_admin.patch(url, {"allow_delegation": False}, format="json")
    assert off.status_code == 200 and off.json()["allow_delegation"] is False
    bad = pair.x_admin.patch(url, {"allow_delegation": "yes please"}, format="json")
    assert bad.status_code == 400


def test_the_acting_agent_revokes_its_token_and_it_is_in_the_status_list(pair: Pair) -> None:
    """B's token across organizations is B's: B revokes it at /oauth2/revoke like any of its
    tokens, and what was exchanged from it goes too; Y cannot introspect X's token, X can."""
    assert pair.trust().status_code == 201
    assert pair.policy([str(pair.b.agent.id), str(pair.c.agent.id)]).status_code == 200
    at_b = exchange(pair.b, token_for(pair.a)).json()["access_token"]
    at_c = exchange(pair.c, at_b).json()["access_token"]

    def introspected(agent: Credentialed, token: str) -> bool:
        response = HttpClient().post(
            "/oauth2/introspect", f"token={token}", FORM,
            HTTP_AUTHORIZATION=basic(agent.client_id, agent.secret),
        )  # fmt: skip
        active: bool = response.json()["active"]
        return active

    assert introspected(pair.a, at_b) and not introspected(pair.b, at_b)
    revoked = HttpClient().post(
        "/oauth2/revoke", f"token={at_b}", FORM,
        HTTP_AUTHORIZATION=basic(pair.b.client_id, pair.b.secret),
    )  # fmt: skip
    assert revoked.status_code == 200
    assert not accepted(at_b) and not accepted(at_c)
    eventually_revoked(at_b)
    eventually_revoked(at_c)
    assert not introspected(pair.a, at_b)
