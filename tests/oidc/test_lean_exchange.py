"""Token exchange between an organization's agents on the token endpoint's lean path
(oidc/lean.py): one statement once the caller and the subject's policy are cached, the full
path's answer, a database re-check that a stale cache cannot overrule, and a revocation of a
tree that an exchange from it never slips past."""

import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from agentidp.tenancy import tenant_context
from agents.models import Agent
from compliance.models import AuditEvent
from compliance.services import audit_chain_verify
from oidc.lean import policy_cache
from oidc.models import AccessToken, RevokedToken
from oidc.services import agent_tokens_revoke
from organizations.models import Organization
from tests.dbroles import raw_connection
from tests.factories import TEST_ACTOR, OrganizationFactory, StaffFactory
from tests.oidc.conftest import (
    ACCESS,
    DELEGATION_SCOPES,
    Credentialed,
    credentialed,
    exchange,
    jwt_parts,
    statements,
)
from tests.oidc.conftest import agent_token as token_for
from tests.oidc.test_lean_path import lean, same_records

SCOPES = DELEGATION_SCOPES


def test_a_cached_exchange_costs_one_statement(
    trio: tuple[Credentialed, Credentialed, Credentialed], org: Organization
) -> None:
    """The first exchange reads the subject's policy; the next is one statement that re-checks
    it, records the token with its parent and appends token.issued."""
    a, b, _ = trio
    root = token_for(a)
    assert exchange(b, root).status_code == 200
    issued = lean("issued")
    with CaptureQueriesContext(connection) as queries:
        response = exchange(b, root, scope="agents:read")
    assert response.status_code == 200, response.content
    sql = statements(queries)
    assert len(sql) == 1 and "oidc_token_exchange" in sql[0], sql
    assert lean("issued") == issued + 1
    body = response.json()
    assert body["issued_token_type"] == ACCESS and body["scope"] == "agents:read"
    claims = jwt_parts(body["access_token"])[1]
    assert claims["sub"] == str(a.agent.id) and claims["client_id"] == b.client_id
    assert claims["act"] == {
        "sub": str(b.agent.id), "client_id": b.client_id, "organization_id": str(org.id)
    }  # fmt: skip
    with tenant_context(org.id):
        row = AccessToken.objects.get(jti=claims["jti"])
        event = AuditEvent.objects.get(organization_id=org.id, subject_id=claims["jti"])
        verification = audit_chain_verify(organization_id=org.id)
    assert str(row.parent_jti) == jwt_parts(root)[1]["jti"]
    assert row.status_idx == claims["status"]["status_list"]["idx"]
    assert event.action == "token.issued" and event.actor_id == str(b.agent.id)
    assert event.data["act"] == claims["act"] and event.data["depth"] == 1
    assert verification.valid, verification


def test_lean_and_full_exchanges_answer_the_same(
    trio: tuple[Credentialed, Credentialed, Credentialed], org: Organization
) -> None:
    a, b, c = trio
    at_b = exchange(b, token_for(a)).json()["access_token"]
    issued = lean("issued")
    lean_answer = exchange(c, at_b)
    assert lean("issued") == issued + 1
    full_answer = exchange(c, at_b, lean_form=False)
    assert lean("issued") == issued + 1  # the second one was the full path's
    assert lean_answer.status_code == full_answer.status_code == 200
    lean_body, full_body = lean_answer.json(), full_answer.json()
    assert sorted(lean_body) == sorted(full_body)
    for field in ("token_type", "scope", "issued_token_type"):
        assert lean_body[field] == full_body[field], field
    assert abs(lean_body["expires_in"] - full_body["expires_in"]) <= 1
    (lean_header, lean_claims), (full_header, full_claims) = (
        jwt_parts(lean_body["access_token"]),
        jwt_parts(full_body["access_token"]),
    )
    assert lean_header == full_header and set(lean_claims) == set(full_claims)
    for claim in ("iss", "sub", "aud", "client_id", "scope", "organization_id", "act"):
        assert lean_claims[claim] == full_claims[claim], claim
    assert lean_claims["act"]["act"]["sub"] == str(b.agent.id)  # C outermost, B inside
    same_records(org, lean_claims["jti"], full_claims["jti"], "parent_jti")


def test_the_database_refuses_what_a_stale_policy_would_allow(
    trio: tuple[Credentialed, Credentialed, Credentialed], org: Organization
) -> None:
    """Changes that bypass every service (no new stamp) still get nothing through the cache:
    oidc_token_exchange re-checks the policy and the subject token's revocation."""
    a, b, c = trio
    root = token_for(a)
    assert exchange(b, root).status_code == 200
    assert a.agent.id in policy_cache
    with tenant_context(org.id):
        Agent.objects.filter(id=a.agent.id).update(delegation_actors=[str(c.agent.id)])
    rechecks = lean("recheck")
    refused = exchange(b, root)
    assert refused.status_code == 400, refused.content
    assert refused.json()["error"] == "invalid_grant"
    assert refused.json()["error_description"].startswith("not_allowed_to_act:")
    assert lean("recheck") == rechecks + 1
    assert a.agent.id not in policy_cache  # read again next time

    # revoked in the database only (Redis never told): the lean and the full path both refuse
    with tenant_context(org.id):
        Agent.objects.filter(id=a.agent.id).update(delegation_actors=["*"])
    assert exchange(b, root).status_code == 200
    claims = jwt_parts(root)[1]
    with tenant_context(org.id):
        RevokedToken.objects.create(
            organization_id=org.id, jti=claims["jti"], revoked_at=timezone.now(),
            expires_at=timezone.now() + timedelta(hours=1), reason="client_request",
        )  # fmt: skip
    rechecks = lean("recheck")
    refused = exchange(b, root)
    assert refused.status_code == 400, refused.content
    assert refused.json()["error"] == "invalid_grant"
    assert refused.json()["error_description"].startswith("revoked:")
    assert lean("recheck") == rechecks + 1


def test_a_policy_change_reaches_the_next_exchange(
    trio: tuple[Credentialed, Credentialed, Credentialed],
    org: Organization,
    django_capture_on_commit_callbacks: Any,
) -> None:
    a, b, _ = trio
    root = token_for(a)
    assert exchange(b, root).json()["scope"] == "agents:read agents:write"
    admin = APIClient()
    admin.force_login(StaffFactory(organization=org, role="admin"))
    with django_capture_on_commit_callbacks(execute=True):  # the new stamp, once committed
        put = admin.put(
            f"/agents/{a.agent.id}/delegation", {"actors": "*", "scopes": ["agents:read"]},
            format="json",
        )  # fmt: skip
    assert put.status_code == 200, put.content
    issued = lean("issued")
    narrowed = exchange(b, root)
    assert narrowed.status_code == 200 and narrowed.json()["scope"] == "agents:read"
    assert lean("issued") == issued + 1


@pytest.mark.parametrize(
    "subject_token",
    [
        "not-a-token",
        "eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.eyJzdWIiOiJ4In0.",  # alg none
        "a.b.c",
        "\u00e9" * 10,
    ],
)
def test_hostile_subject_tokens_are_oauth_errors(
    trio: tuple[Credentialed, Credentialed, Credentialed], subject_token: str
) -> None:
    _, b, _ = trio
    response = exchange(b, subject_token)
    assert response.status_code == 400, response.content
    assert response.json()["error"] in ("invalid_grant", "invalid_request")


def test_another_organizations_subject_token_is_refused_on_both_paths(
    trio: tuple[Credentialed, Credentialed, Credentialed],
) -> None:
    stranger = credentialed(OrganizationFactory(), SCOPES)
    foreign = token_for(stranger)
    for lean_form in (True, False):
        response = exchange(trio[1], foreign, lean_form=lean_form)
        assert response.status_code == 400, response.content
        assert response.json()["error_description"].startswith("foreign_subject:")


def _waiting_on_a_lock(query: str) -> bool:
    with raw_connection() as conn:  # the same role sees its sessions' queries
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE %s",
            [f"%{query}%"],
        ).fetchone()
    return bool(row and row[0])


@pytest.mark.django_db(transaction=True)
def test_an_exchange_never_slips_past_a_revocation_of_its_tree() -> None:
    """An exchange from a token whose tree is being revoked waits for the revocation and then
    finds its parent revoked: the tree never gains a live token the revocation missed."""
    org = OrganizationFactory()
    a, b = credentialed(org, SCOPES), credentialed(org, SCOPES)
    root = token_for(a)
    assert exchange(b, root).status_code == 200  # the caller and the policy are cached
    answers: list[Any] = []
    with tenant_context(org.id):
        agent_tokens_revoke(actor=TEST_ACTOR, organization_id=org.id, agent_id=a.agent.id)
        racer = threading.Thread(target=lambda: answers.append(exchange(b, root)))
        racer.start()
        deadline = time.monotonic() + 20
        while not _waiting_on_a_lock("oidc_token_exchange"):
            assert racer.is_alive(), [(r.status_code, r.content) for r in answers]
            assert time.monotonic() < deadline, "the exchange never waited for the revocation"
            time.sleep(0.02)
    racer.join(timeout=20)
    assert answers and answers[0].status_code == 400, answers
    assert answers[0].json()["error"] == "invalid_grant"
    parent = uuid.UUID(jwt_parts(root)[1]["jti"])
    with tenant_context(org.id):
        children = list(AccessToken.objects.filter(parent_jti=parent).values_list("jti", flat=True))
        revoked = set(RevokedToken.objects.values_list("jti", flat=True))
    assert len(children) == 1 and set(children) <= revoked  # only the first, and it is revoked
