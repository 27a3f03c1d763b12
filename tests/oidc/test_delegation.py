"""RFC 8693 token exchange between an organization's agents: an orchestrator hands a narrower
token to a sub-agent, which hands a narrower one again. ``sub`` stays the first agent's, ``act``
nests the chain (the latest actor outermost), scopes and lifetime only narrow, the agent's
delegation policy decides who may act and how deep a chain grows, and every refusal is an
OAuth error, audited with its reason. Through HTTP and the real database."""

import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.test import Client as HttpClient
from django.utils import timezone
from rest_framework.test import APIClient

from agentidp.policy import decision_cache, policy_engine
from agentidp.tenancy import tenant_context
from compliance.models import AuditEvent
from oidc.models import AccessToken, RevokedToken
from oidc.tokens import api_audience
from organizations.models import Organization
from tests.factories import StaffFactory
from tests.oidc.conftest import (
    ACCESS,
    EXCHANGE,
    FORM,
    Credentialed,
    basic,
    claims,
    credentialed,
    exchange,
    refused,
)
from tests.oidc.conftest import agent_token as token_for

SCOPES = ["agents:read", "agents:write", "credentials:write"]
SCOPES_TEXT = " ".join(SCOPES)


def test_a_chain_of_three_agents_nests_act_and_narrows_every_step(
    trio: tuple[Credentialed, Credentialed, Credentialed], org: Organization
) -> None:
    a, b, c = trio
    first = token_for(a)
    given = exchange(b, first, scope="agents:read agents:write")
    assert given.status_code == 200, given.content
    body = given.json()
    assert body["issued_token_type"] == ACCESS and body["token_type"] == "Bearer"
    at_b = claims(body["access_token"])
    assert at_b["sub"] == str(a.agent.id) and at_b["client_id"] == b.client_id
    assert at_b["act"] == {
        "sub": str(b.agent.id), "client_id": b.client_id, "organization_id": str(org.id)
    }  # fmt: skip
    again = exchange(c, body["access_token"], scope="agents:read")
    assert again.status_code == 200, again.content
    at_c = claims(again.json()["access_token"])
    assert at_c["sub"] == str(a.agent.id) and at_c["scope"] == "agents:read"
    assert at_c["act"]["sub"] == str(c.agent.id)  # the latest actor outermost
    assert at_c["act"]["act"] == at_b["act"]
    assert at_c["exp"] <= claims(first)["exp"]  # never outlives what it was exchanged for
    # the API serves C's token as A's, and introspection shows the chain
    api = APIClient()
    bearer: dict[str, Any] = {"HTTP_AUTHORIZATION": f"Bearer {again.json()['access_token']}"}
    assert api.get(f"/agents/{a.agent.id}", **bearer).status_code == 200
    assert api.post("/agents", {"name": "x"}, format="json", **bearer).status_code == 403
    introspected = HttpClient().post(
        "/oauth2/introspect", f"token={again.json()['access_token']}", FORM,
        HTTP_AUTHORIZATION=basic(c.client_id, c.secret),
    ).json()  # fmt: skip
    assert introspected["active"] is True and introspected["act"] == at_c["act"]
    with tenant_context(org.id):  # the tree is recorded: each token names its parent
        rows = {str(t.jti): t for t in AccessToken.objects.filter(organization_id=org.id)}
        issued = AuditEvent.objects.get(
            organization_id=org.id, action="token.issued", subject_id=at_c["jti"]
        )
    assert str(rows[at_c["jti"]].parent_jti) == at_b["jti"]
    assert str(rows[at_b["jti"]].parent_jti) == claims(first)["jti"]
    assert rows[claims(first)["jti"]].parent_jti is None
    assert issued.actor_id == str(c.agent.id) and issued.data["sub"] == str(a.agent.id)
    assert issued.data["act"] == at_c["act"] and issued.data["depth"] == 2


def test_scopes_only_narrow(
    trio: tuple[Credentialed, Credentialed, Credentialed], org: Organization
) -> None:
    a, b, _ = trio
    narrow = credentialed(org, ["agents:read"])
    subject = token_for(a, "agents:read")
    refused(exchange(b, subject, scope="agents:write"), "invalid_scope", "scope_not_delegable")
    # no scope asked: what the subject token, the caller and the policy have in common
    assert claims(exchange(narrow, token_for(a))
                  .json()["access_token"])["scope"] == "agents:read"  # fmt: skip


def test_the_delegation_policy_decides_who_acts_what_and_how_deep(
    trio: tuple[Credentialed, Credentialed, Credentialed], org: Organization,
    client_for: Callable[..., APIClient],
) -> None:  # fmt: skip
    a, b, c = trio
    admin = client_for(StaffFactory(organization=org, role="admin"))
    assert admin.get(f"/agents/{a.agent.id}/delegation").json() == {
        "actors": "*", "scopes": [], "max_depth": None
    }  # fmt: skip
    policy = {"actors": [str(b.agent.id)], "scopes": ["agents:read"], "max_depth": 1}
    put = admin.put(f"/agents/{a.agent.id}/delegation", policy, format="json")
    assert put.status_code == 200, put.content
    assert put.json() == policy
    subject = token_for(a)
    refused(exchange(c, subject), "invalid_grant", "not_allowed_to_act")
    refused(exchange(b, subject, scope="agents:write"), "invalid_scope", "scope_not_delegable")
    at_b = exchange(b, subject)
    assert claims(at_b.json()["access_token"])["scope"] == "agents:read"
    admin.put(f"/agents/{a.agent.id}/delegation", {**policy, "actors": "*"}, format="json")
    refused(exchange(c, at_b.json()["access_token"]), "invalid_request", "chain_too_deep")
    with tenant_context(org.id):
        reasons = list(
            AuditEvent.objects.filter(organization_id=org.id, action="token.exchange_refused")
            .order_by("sequence").values_list("data__reason", flat=True)
        )  # fmt: skip
    assert reasons == ["not_allowed_to_act", "scope_not_delegable", "chain_too_deep"]


@pytest.mark.parametrize(
    ("policy", "field"),
    [({"actors": "all"}, "actors"), ({"actors": ["not-a-uuid"]}, "actors"),
     ({"actors": "*", "scopes": ["members:write"]}, "scopes[0]"),
     ({"actors": "*", "max_depth": 11}, "max_depth"), ({"actors": "*", "max_depth": 0}, "max_depth"),
     ({"actors": "*", "extra": 1}, "extra"), ({"scopes": []}, "actors")],
)  # fmt: skip
def test_a_bad_policy_is_a_problem_naming_the_field(
    trio: tuple[Credentialed, Credentialed, Credentialed], org: Organization,
    client_for: Callable[..., APIClient], policy: dict[str, Any], field: str,
) -> None:  # fmt: skip
    admin = client_for(StaffFactory(organization=org, role="admin"))
    response = admin.put(f"/agents/{trio[0].agent.id}/delegation", policy, format="json")
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert field in response.json()["errors"]


def test_a_policy_names_only_the_organizations_other_agents(
    trio: tuple[Credentialed, Credentialed, Credentialed], org: Organization,
    other_org: Organization, client_for: Callable[..., APIClient],
) -> None:  # fmt: skip
    a = trio[0]
    stranger = credentialed(other_org, SCOPES)
    admin = client_for(StaffFactory(organization=org, role="admin"))
    foreign = admin.put(
        f"/agents/{a.agent.id}/delegation", {"actors": [str(stranger.agent.id)]}, format="json"
    )
    assert foreign.status_code == 404  # as any id naming nothing here
    assert str(stranger.agent.id) in foreign.json()["detail"]
    itself = admin.put(f"/agents/{a.agent.id}/delegation", {"actors": [str(a.agent.id)]},
                       format="json")  # fmt: skip
    assert itself.status_code == 400 and "actors" in itself.json()["errors"]
    member = client_for(StaffFactory(organization=org, role="member"))
    assert member.get(f"/agents/{a.agent.id}/delegation").status_code == 200
    assert member.put(f"/agents/{a.agent.id}/delegation", {"actors": "*"},
                      format="json").status_code == 403  # fmt: skip
    outsider = client_for(StaffFactory(organization=other_org, role="admin"))
    assert outsider.get(f"/agents/{a.agent.id}/delegation").status_code == 404


def test_refusals_are_oauth_errors(
    trio: tuple[Credentialed, Credentialed, Credentialed], org: Organization,
    other_org: Organization,
) -> None:  # fmt: skip
    a, b, c = trio
    subject = token_for(a)
    refused(exchange(b, "not.a.token"), "invalid_grant", "malformed")
    refused(exchange(a, subject), "invalid_request", "self")
    foreign = credentialed(other_org, SCOPES)
    refused(exchange(b, token_for(foreign)), "invalid_grant", "foreign_subject")
    refused(exchange(b, subject, subject_token_type="urn:x"), "invalid_request",
            "subject_token_type")  # fmt: skip
    refused(exchange(b, subject, actor_token=token_for(c),
                     actor_token_type=ACCESS), "invalid_grant", "foreign_actor")  # fmt: skip
    assert (
        exchange(b, subject, actor_token=token_for(b), actor_token_type=ACCESS).status_code == 200
    )
    wrong = HttpClient().post(
        "/oauth2/token", {"grant_type": EXCHANGE, "subject_token": subject,
                          "subject_token_type": ACCESS},
        HTTP_AUTHORIZATION=basic(b.client_id, "ais_wrong"),
    )  # fmt: skip
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    # revoked by its own client: nothing can be exchanged for it any more
    revoked = HttpClient().post(
        "/oauth2/revoke", f"token={subject}", FORM, HTTP_AUTHORIZATION=basic(a.client_id, a.secret)
    )
    assert revoked.status_code == 200
    refused(exchange(b, subject), "invalid_grant", "revoked")
    earlier = token_for(a)
    with time_machine.travel(timezone.now() + timedelta(hours=2)):
        refused(exchange(b, earlier), "invalid_grant", "expired")


def test_an_actor_that_stops_ends_the_tokens_it_holds_for_others(
    trio: tuple[Credentialed, Credentialed, Credentialed], org: Organization,
    client_for: Callable[..., APIClient],
) -> None:  # fmt: skip
    a, b, c = trio
    at_c = exchange(c, exchange(b, token_for(a)).json()["access_token"]).json()["access_token"]
    bearer: dict[str, Any] = {"HTTP_AUTHORIZATION": f"Bearer {at_c}"}
    assert APIClient().get("/agents", **bearer).status_code == 200
    admin = client_for(StaffFactory(organization=org, role="admin"))
    assert admin.post(f"/agents/{b.agent.id}/suspend", {}, format="json").status_code == 200
    assert APIClient().get("/agents", **bearer).status_code == 401  # B, in the chain, stopped


def test_without_client_authentication_token_exchange_stays_the_federation_grant(
    trio: tuple[Credentialed, Credentialed, Credentialed],
) -> None:
    response = HttpClient().post(
        "/oauth2/token",
        {"grant_type": EXCHANGE, "subject_token": token_for(trio[0]), "subject_token_type": ACCESS},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"  # no partner here issued it
    assert "unknown_issuer" in response.json()["error_description"]


def test_what_a_delegated_token_does_is_audited_as_who_acted_for_whom(
    trio: tuple[Credentialed, Credentialed, Credentialed], org: Organization
) -> None:
    a, b, c = trio
    at_b = exchange(b, token_for(a)).json()["access_token"]
    at_c = exchange(c, at_b, scope="agents:write").json()["access_token"]
    created = APIClient().post(
        "/agents", {"name": "made-by-delegation"}, format="json",
        HTTP_AUTHORIZATION=f"Bearer {at_c}",
    )  # fmt: skip
    assert created.status_code == 201, created.content
    with tenant_context(org.id):
        event = AuditEvent.objects.get(
            organization_id=org.id, action="agent.created", subject_id=created.json()["id"]
        )
    assert event.actor_id == str(a.agent.id)  # for A
    assert event.data["act"] == [str(c.agent.id), str(b.agent.id)]  # by C, through B


def test_a_policy_can_refuse_long_chains_for_one_scope(
    trio: tuple[Credentialed, Credentialed, Credentialed], tmp_path: Path, settings: Any
) -> None:
    """The Rego input carries the chain: this policy refuses credentials:write to a chain of
    more than one actor, and leaves everything else as the shipped policy decides."""
    a, b, c = trio
    shipped = Path(settings.AGENTIDP["POLICY"]["PATH"]).read_text()
    stricter = shipped.replace("\tmay_write\n}", "\tmay_write\n\tshort_enough\n}", 1) + (
        '\nshort_enough if input.scope != "credentials:write"\n'
        "\nshort_enough if count(input.principal.act) <= 1\n"
    )
    assert stricter != shipped
    (tmp_path / "authz.rego").write_text(stricter)
    settings.AGENTIDP = {
        **settings.AGENTIDP, "POLICY": {**settings.AGENTIDP["POLICY"], "PATH": str(tmp_path / "authz.rego")}
    }  # fmt: skip
    policy_engine.cache_clear()
    decision_cache.clear()
    try:
        at_b = exchange(b, token_for(a, SCOPES_TEXT), scope=SCOPES_TEXT).json()["access_token"]
        at_c = exchange(c, at_b, scope=SCOPES_TEXT).json()["access_token"]
        path = f"/agents/{c.agent.id}/credentials"
        one = APIClient().post(path, HTTP_AUTHORIZATION=f"Bearer {at_b}")
        assert one.status_code == 201, one.content  # one actor: allowed
        two = APIClient().post(path, HTTP_AUTHORIZATION=f"Bearer {at_c}")
        assert two.status_code == 403, two.content  # two actors: refused by the policy
        assert APIClient().get("/agents", HTTP_AUTHORIZATION=f"Bearer {at_c}").status_code == 200
    finally:
        policy_engine.cache_clear()
        decision_cache.clear()


def test_staff_set_the_policy_and_read_a_tokens_chain_in_the_admin(
    trio: tuple[Credentialed, Credentialed, Credentialed], org: Organization,
    client_for: Callable[..., APIClient],
) -> None:  # fmt: skip
    a, b, c = trio
    admin = client_for(StaffFactory(organization=org, role="admin"))
    page = f"/admin/agents/agent/{a.agent.id}/delegation/"
    assert page in admin.get(f"/admin/agents/agent/{a.agent.id}/change/").content.decode()
    form = admin.get(page).content.decode()
    assert b.agent.name in form and c.agent.name in form and a.agent.name in form
    saved = admin.post(page, {"actors": [str(b.agent.id)], "scopes": ["agents:read"],
                              "max_depth": "2"})  # fmt: skip
    assert saved.status_code == 302, saved.content.decode()[-2000:]
    assert admin.get(f"/agents/{a.agent.id}/delegation").json() == {
        "actors": [str(b.agent.id)], "scopes": ["agents:read"], "max_depth": 2
    }  # fmt: skip
    refused = admin.post(page, {"any_agent": "on", "max_depth": "11"})
    assert refused.status_code == 200  # the form again, with its error
    assert "Ensure this value is less than or equal to 10" in refused.content.decode()
    member = client_for(StaffFactory(organization=org, role="member"))
    assert member.get(page).status_code == 404
    assert page not in member.get(f"/admin/agents/agent/{a.agent.id}/change/").content.decode()
    at_b = exchange(b, token_for(a)).json()["access_token"]
    with tenant_context(org.id):
        row = AccessToken.objects.get(organization_id=org.id, jti=claims(at_b)["jti"])
        parent = AccessToken.objects.get(organization_id=org.id, jti=claims(at_b)["jti"]).parent_jti
    chain = admin.get(f"/admin/oidc/accesstoken/{row.pk}/change/").content.decode()
    assert f"{a.agent.name} (the subject)" in chain and str(parent) in chain
    assert f"{b.agent.name} (acting for it): this token" in chain


def test_the_organizations_default_depth_is_a_setting(
    trio: tuple[Credentialed, Credentialed, Credentialed], org: Organization,
    platform_api: APIClient,
) -> None:  # fmt: skip
    """Owners set it in the admin (tests/platform/test_admin_staff.py), platform staff here."""
    a, b, c = trio
    platform = platform_api
    path = f"/organizations/{org.id}"
    changed = platform.patch(path, {"delegation_max_depth": 1}, format="json")
    assert changed.status_code == 200, changed.content
    assert changed.json()["delegation_max_depth"] == 1
    assert platform.patch(path, {"delegation_max_depth": 11}, format="json").status_code == 400
    at_b = exchange(b, token_for(a)).json()["access_token"]
    refused(exchange(c, at_b), "invalid_request", "chain_too_deep")
    assert "allows 1" in exchange(c, at_b).json()["error_description"]


def test_agent_info_names_the_chain_and_no_id_token_is_issued_for_a_delegation(
    org: Organization,
) -> None:
    a = credentialed(org, ["agents:read", "openid", "profile"])
    b = credentialed(org, ["agents:read", "openid", "profile"])
    given = exchange(b, token_for(a, "agents:read openid profile"))
    assert given.status_code == 200, given.content
    assert "id_token" not in given.json()  # it would describe B's own authentication
    info = HttpClient().get(
        "/agent-info", HTTP_AUTHORIZATION=f"Bearer {given.json()['access_token']}"
    )
    assert info.status_code == 200, info.content
    assert info.json()["sub"] == str(a.agent.id) and info.json()["agent_name"] == a.agent.name
    assert info.json()["act"] == {"sub": str(b.agent.id)}


def test_the_caller_may_authenticate_in_the_form(
    trio: tuple[Credentialed, Credentialed, Credentialed],
) -> None:
    a, b, _ = trio
    response = HttpClient().post(
        "/oauth2/token",
        {"grant_type": EXCHANGE, "subject_token": token_for(a), "subject_token_type": ACCESS,
         "client_id": b.client_id, "client_secret": b.secret},
    )  # fmt: skip
    assert response.status_code == 200, response.content
    assert claims(response.json()["access_token"])["act"]["sub"] == str(b.agent.id)


def _tree(a: Credentialed, b: Credentialed, c: Credentialed) -> tuple[str, str, str]:
    root = token_for(a)
    at_b = exchange(b, root).json()["access_token"]
    at_c = exchange(c, at_b, scope="agents:read").json()["access_token"]
    return root, at_b, at_c


def _accepted(token: str) -> bool:
    return APIClient().get("/agents", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200


def test_revoking_a_token_revokes_every_token_exchanged_from_it(
    trio: tuple[Credentialed, Credentialed, Credentialed], org: Organization
) -> None:
    a, b, c = trio
    root, at_b, at_c = _tree(a, b, c)
    other_root, other_b, _ = _tree(a, b, c)  # a second tree, left alone
    assert all(_accepted(t) for t in (root, at_b, at_c))
    revoked = HttpClient().post(
        "/oauth2/revoke", f"token={at_b}", FORM, HTTP_AUTHORIZATION=basic(b.client_id, b.secret)
    )
    assert revoked.status_code == 200
    assert _accepted(root)  # above it: untouched
    assert not _accepted(at_b) and not _accepted(at_c)  # it and everything below it
    assert _accepted(other_root) and _accepted(other_b)
    introspected = HttpClient().post(
        "/oauth2/introspect", f"token={at_c}", FORM, HTTP_AUTHORIZATION=basic(c.client_id, c.secret)
    )
    assert introspected.json() == {"active": False}
    with tenant_context(org.id):
        reasons = dict(
            RevokedToken.objects.filter(organization_id=org.id).values_list("jti", "reason")
        )
        event = AuditEvent.objects.get(
            organization_id=org.id, action="token.revoked", subject_id=claims(at_b)["jti"]
        )
    assert reasons == {
        uuid.UUID(claims(at_b)["jti"]): "client_request", uuid.UUID(claims(at_c)["jti"]): "lineage"
    }  # fmt: skip
    assert event.data["derived_revoked"] == 1


def test_suspending_or_revoking_at_the_root_ends_the_whole_tree(
    trio: tuple[Credentialed, Credentialed, Credentialed], org: Organization,
    client_for: Callable[..., APIClient],
) -> None:  # fmt: skip
    a, b, c = trio
    admin = client_for(StaffFactory(organization=org, role="admin"))
    _, at_b, at_c = _tree(a, b, c)
    # the root's secret revoked: its tokens, and every token exchanged from them
    revoked = admin.delete(f"/agents/{a.agent.id}/credentials/{a.credential_id}")
    assert revoked.status_code == 204, revoked.content
    with tenant_context(org.id):
        lineage = set(
            RevokedToken.objects.filter(organization_id=org.id, reason="lineage")
            .values_list("jti", flat=True)
        )  # fmt: skip
    assert lineage == {uuid.UUID(claims(t)["jti"]) for t in (at_b, at_c)}
    assert not _accepted(at_b) and not _accepted(at_c)


def test_a_token_says_who_may_act_for_its_agent_when_the_policy_restricts_it(
    trio: tuple[Credentialed, Credentialed, Credentialed], org: Organization,
    client_for: Callable[..., APIClient], django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    a, b, c = trio
    admin = client_for(StaffFactory(organization=org, role="admin"))

    def actors(value: Any) -> None:
        body = {"actors": value, "scopes": [], "max_depth": None}
        with django_capture_on_commit_callbacks(execute=True):  # the commit re-stamps the cache
            response = admin.put(f"/agents/{a.agent.id}/delegation", body, format="json")
        assert response.status_code == 200, response.content

    assert "may_act" not in claims(token_for(a))  # any agent of the organization may
    actors([str(b.agent.id)])
    # the lean path's cached client record follows the change at once
    assert claims(token_for(a))["may_act"] == {"sub": str(b.agent.id)}  # RFC 8693 4.4
    both = sorted([str(b.agent.id), str(c.agent.id)])
    actors(both)
    assert claims(token_for(a))["may_act"] == [{"sub": both[0]}, {"sub": both[1]}]
    full_path = HttpClient().post(  # resource= takes the full path: the same claim
        "/oauth2/token",
        f"grant_type=client_credentials&scope=agents:read&resource={api_audience()}",
        FORM, HTTP_AUTHORIZATION=basic(a.client_id, a.secret),
    )  # fmt: skip
    assert claims(full_path.json()["access_token"])["may_act"] == [
        {"sub": both[0]}, {"sub": both[1]}
    ]  # fmt: skip
    actors([])
    assert claims(token_for(a))["may_act"] == []  # nobody may
    actors("*")
    assert "may_act" not in claims(token_for(a))
