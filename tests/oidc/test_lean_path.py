"""The token endpoint's lean path (oidc/lean.py): one statement per cached client, the full
path's answers and metrics, refusals on the full path, a database re-check the cache cannot
overrule, and a bounded cache."""

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import requests
from django.conf import settings
from django.db import connection
from django.test import Client as HttpClient
from django.test.utils import CaptureQueriesContext
from prometheus_client import REGISTRY

from agentidp.tenancy import tenant_context
from agents.services import agent_update
from compliance.models import AuditEvent
from compliance.services import audit_chain_verify
from credentials.models import ClientSecret
from credentials.services import client_scopes_set, credential_revoke
from oidc.lean import client_cache
from oidc.models import AccessToken
from organizations.models import Organization
from tests.factories import TEST_ACTOR, OrganizationFactory
from tests.oidc.conftest import (
    FORM,
    Credentialed,
    basic,
    credentialed,
    jwt_parts,
    request_token,
    statements,
)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def lean(outcome: str) -> float:
    return sample("agentidp_token_lean_total", outcome=outcome)


def full_path_token(c: Credentialed) -> Any:
    """A valid request the lean path leaves to the full path: a multipart body (Django parses
    it; the lean path reads only the urlencoded form OAuth clients send)."""
    return HttpClient().post(
        "/oauth2/token",
        {"grant_type": "client_credentials"},
        headers={"Authorization": basic(c.client_id, c.secret)},
    )


def test_a_cached_client_costs_one_statement(cred: Credentialed, org: Organization) -> None:
    """The first request reads the client (a cache miss); the next is one statement that
    re-checks, records the token and appends token.issued."""
    with CaptureQueriesContext(connection) as first:
        assert request_token(cred).status_code == 200
    assert [q for q in statements(first) if "credentials_client_load" in q]
    issued = lean("issued")
    with CaptureQueriesContext(connection) as queries:
        response = request_token(cred)
    assert response.status_code == 200, response.content
    sql = statements(queries)
    assert len(sql) == 1 and "oidc_token_issue" in sql[0], sql
    assert lean("issued") == issued + 1
    jti = jwt_parts(response.json()["access_token"])[1]["jti"]
    with tenant_context(org.id):
        row = AccessToken.objects.get(jti=jti)
        event = AuditEvent.objects.get(organization_id=org.id, subject_id=jti)
    assert row.credential_id == cred.credential_id and row.application_id is not None
    assert event.action == "token.issued" and event.actor_id == str(cred.agent.id)
    with tenant_context(org.id):
        verification = audit_chain_verify(organization_id=org.id)
    assert verification.valid and verification.events_checked >= 2, verification


def test_the_full_path_still_costs_two_statements(cred: Credentialed) -> None:
    """DOT's path: one call loads the client, one statement records and audits the token."""
    assert full_path_token(cred).status_code == 200
    with CaptureQueriesContext(connection) as queries:
        response = full_path_token(cred)
    assert response.status_code == 200, response.content
    sql = statements(queries)
    assert len(sql) == 2, sql
    assert "credentials_client_load" in sql[0]
    assert "INSERT INTO oidc_accesstoken" in sql[1] and "compliance_audit_append" in sql[1]


def test_lean_and_full_answers_are_the_same(cred: Credentialed, org: Organization) -> None:
    """Same status, headers, body fields, claims and audit record, whichever path answers."""
    issued = lean("issued")
    lean_answer = request_token(cred)
    assert lean("issued") == issued + 1
    full_answer = full_path_token(cred)
    assert lean("issued") == issued + 1  # the second one was the full path's
    assert lean_answer.status_code == full_answer.status_code == 200

    def headers(response: Any) -> dict[str, str]:
        return {k.lower(): v for k, v in response.items() if k.lower() != "content-length"}

    assert headers(lean_answer) == headers(full_answer)
    lean_body, full_body = lean_answer.json(), full_answer.json()
    assert list(lean_body) == list(full_body)
    assert {k: v for k, v in lean_body.items() if k != "access_token"} == {
        k: v for k, v in full_body.items() if k != "access_token"
    }
    (lean_header, lean_claims), (full_header, full_claims) = (
        jwt_parts(lean_body["access_token"]),
        jwt_parts(full_body["access_token"]),
    )
    assert lean_header == full_header
    assert set(lean_claims) == set(full_claims)
    for claim in ("iss", "sub", "aud", "client_id", "scope", "organization_id"):
        assert lean_claims[claim] == full_claims[claim], claim
    assert lean_claims["exp"] - lean_claims["iat"] == full_claims["exp"] - full_claims["iat"]
    same_records(org, lean_claims["jti"], full_claims["jti"], "token")


def same_records(org: Organization, lean_jti: str, full_jti: str, *columns: str) -> None:
    """The two tokens' token.issued events and rows say the same (but for their ids)."""
    with tenant_context(org.id):
        events = {
            e.subject_id: e
            for e in AuditEvent.objects.filter(organization_id=org.id, action="token.issued")
        }
        rows = {str(t.jti): t for t in AccessToken.objects.filter(organization_id=org.id)}
    lean_event, full_event = events[lean_jti], events[full_jti]
    assert lean_event.data == full_event.data
    assert (lean_event.actor_type, lean_event.actor_id) == (
        full_event.actor_type,
        full_event.actor_id,
    )
    lean_row, full_row = rows[lean_jti], rows[full_jti]
    for column in ("scope", "resource", "credential_id", "application_id", *columns):
        assert getattr(lean_row, column) == getattr(full_row, column), column


def test_both_paths_count_in_the_same_metrics(
    cred: Credentialed, django_capture_on_commit_callbacks: Any
) -> None:
    series = [
        ("agentidp_tokens_issued_total", {}),
        ("agentidp_token_endpoint_seconds_count", {"status": "200"}),
        (
            "django_http_responses_total_by_status_view_method_total",
            {"status": "200", "view": "oauth2-token", "method": "POST"},
        ),
        (
            "django_http_requests_total_by_view_transport_method_total",
            {"view": "oauth2-token", "transport": "http", "method": "POST"},
        ),
        ("django_http_requests_latency_seconds_by_view_method_count",
         {"view": "oauth2-token", "method": "POST"}),
        ("django_http_requests_total_by_method_total", {"method": "POST"}),
        ("django_http_responses_before_middlewares_total", {}),
    ]  # fmt: skip

    def counts() -> list[float]:
        return [sample(name, **labels) for name, labels in series]

    start = counts()
    assert request_token(cred).status_code == 200  # lean
    after_lean = counts()
    with django_capture_on_commit_callbacks(execute=True):
        assert full_path_token(cred).status_code == 200
    after_full = counts()
    assert [b - a for a, b in zip(start, after_lean, strict=True)] == [1.0] * len(series)
    assert [b - a for a, b in zip(after_lean, after_full, strict=True)] == [1.0] * len(series)


def test_refusals_take_the_full_path_with_their_reasons(
    cred: Credentialed, org: Organization
) -> None:
    declined = lean("secret")
    refused = request_token(auth=basic(cred.client_id, "ais_" + "x" * 43))
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"
    assert refused["WWW-Authenticate"].startswith("Basic")
    assert lean("secret") == declined + 1
    with tenant_context(org.id):
        failure = AuditEvent.objects.get(organization_id=org.id, action="auth.failed")
    assert failure.data == {"reason": "bad_secret"}

    wrong_scope = request_token(cred, scope="audit:read")
    assert wrong_scope.status_code == 400 and wrong_scope.json()["error"] == "invalid_scope"
    unknown = request_token(cred, scope="agents:read", grant_type="password")
    assert unknown.status_code == 400
    assert unknown.json()["error"] == "unsupported_grant_type"


def test_the_database_refuses_what_a_stale_cache_would_allow(
    cred: Credentialed, org: Organization
) -> None:
    """A change that bypasses every service (no new stamp) still cannot get a token through
    the cache: oidc_token_issue re-checks the secret in the database."""
    assert request_token(cred).status_code == 200
    assert cred.client_id in client_cache
    with tenant_context(org.id):
        ClientSecret.objects.filter(id=cred.credential_id).update(revoked_at="2026-01-01T00:00Z")
    rechecks = lean("recheck")
    refused = request_token(cred)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    assert lean("recheck") == rechecks + 1
    assert cred.client_id not in client_cache  # the stale record is read again next time


def test_a_service_change_gives_a_new_stamp_and_the_cache_reads_again(
    cred: Credentialed, org: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    assert request_token(cred, scope="agents:write").status_code == 200
    stale = sample("agentidp_client_cache_total", result="stale")
    with django_capture_on_commit_callbacks(execute=True), tenant_context(org.id):
        client_scopes_set(
            actor=TEST_ACTOR, organization_id=org.id, agent_id=cred.agent.id, scopes=["agents:read"]
        )
    refused = request_token(cred, scope="agents:write")
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_scope"
    assert sample("agentidp_client_cache_total", result="stale") == stale + 1
    assert request_token(cred, scope="agents:read").status_code == 200

    with django_capture_on_commit_callbacks(execute=True), tenant_context(org.id):
        credential_revoke(
            actor=TEST_ACTOR,
            organization_id=org.id,
            agent_id=cred.agent.id,
            credential_id=cred.credential_id,
        )
    assert request_token(cred).status_code == 401


@pytest.fixture
def small_cache() -> Iterator[None]:
    previous = client_cache.max_entries
    client_cache.max_entries = 3
    yield
    client_cache.max_entries = previous


def test_unknown_client_ids_never_push_the_working_set_out(
    cred: Credentialed, small_cache: None
) -> None:
    assert request_token(cred).status_code == 200
    for n in range(20):
        flood = request_token(auth=basic(str(uuid.uuid4()), "ais_" + "y" * 43))
        # past the failure limit the flooding address is throttled
        assert flood.status_code == (401 if n < 10 else 429)
    assert cred.client_id in client_cache and len(client_cache) == 1
    with CaptureQueriesContext(connection) as queries:
        assert request_token(cred).status_code == 200
    assert len(statements(queries)) == 1  # still cached: no read of the client


def test_the_cache_is_a_bounded_lru(org: Organization, small_cache: None) -> None:
    clients = [credentialed(org) for _ in range(4)]
    for c in clients:
        assert request_token(c).status_code == 200
    assert len(client_cache) == 3
    assert clients[0].client_id not in client_cache  # the least recently used went first
    assert all(c.client_id in client_cache for c in clients[1:])


def owner_sql(sql: str) -> None:
    """Run DDL as the owner role on the test database, committed (outside the test's
    transaction, as an operator would)."""
    owner = settings.DATABASES["owner"]
    with psycopg.connect(
        dbname=str(owner["NAME"]),
        user=str(owner["USER"]),
        host=str(owner["HOST"]),
        port=str(owner["PORT"] or "") or None,
        autocommit=True,
    ) as conn:
        conn.execute(sql.encode())


REFUSE_TOKEN_AUDIT = """
CREATE FUNCTION test_refuse_token_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'audit store refuses token.issued'; END $$;
CREATE TRIGGER test_refuse_token_audit BEFORE INSERT ON compliance_auditevent
FOR EACH ROW WHEN (NEW.action = 'token.issued') EXECUTE FUNCTION test_refuse_token_audit();
"""


def test_a_token_whose_audit_insert_fails_is_never_returned(
    live_server: Any, run_in_threads: Callable[..., list[Any]]
) -> None:
    """Every issuance is audited before its answer. Through a live server (real autocommit and
    request transactions): when the audit row cannot be written, neither path hands out the
    token, and no token row is left behind."""
    org = OrganizationFactory()
    (cred,) = run_in_threads(lambda: credentialed(org))
    assert isinstance(cred, Credentialed), cred
    url = f"{live_server.url}/oauth2/token"
    auth = (cred.client_id, cred.secret)
    lean_form: dict[str, Any] = {
        "data": "grant_type=client_credentials",
        "headers": {"Content-Type": FORM},
    }
    full_form: dict[str, Any] = {"files": {"grant_type": (None, "client_credentials")}}  # multipart
    assert requests.post(url, auth=auth, timeout=10, **lean_form).status_code == 200
    owner_sql(REFUSE_TOKEN_AUDIT)
    try:
        for form in (lean_form, full_form):
            response = requests.post(url, auth=auth, timeout=10, **form)
            assert response.status_code >= 500, response.text
            assert "access_token" not in response.text
            assert response.json()["error"] in {"server_error", "temporarily_unavailable"}
    finally:
        owner_sql(
            "DROP TRIGGER test_refuse_token_audit ON compliance_auditevent;"
            "DROP FUNCTION test_refuse_token_audit()"
        )

    def tokens() -> int:
        with tenant_context(org.id):
            return AccessToken.objects.filter(organization_id=org.id).count()

    assert run_in_threads(tokens) == [1]  # only the first, audited token
    assert requests.post(url, auth=auth, timeout=10, **lean_form).status_code == 200


@pytest.mark.parametrize(
    ("body", "auth"),
    [
        ("grant_type=client_credentials&scope=agents%3Aread%00", None),
        ("grant_type=client_credentials&scope=%ff%fe", None),
        ("grant_type=client_credentials&grant_type=client_credentials", None),
        ("grant_type=client_credentials&scope=agents:read&scope=agents:write", None),
        ("grant_type=client_credentials&scope=agents:read%20%20agents:write", None),
        ("grant_type=client_credentials&client_id=x%00&client_secret=y", ""),
        ("grant_type=client_credentials", "Basic !!!not-base64!!!"),
        ("grant_type=client_credentials", "Basic " + "QUFB" * 3000),
        ("grant_type=client_credentials&" + "a=b&" * 2000, None),
        ("grant_type=client_credentials&scope=" + "x" * 5000, None),
        ("=&&==", None),
    ],
)
def test_hostile_token_requests_get_oauth_errors(
    cred: Credentialed, body: str, auth: str | None
) -> None:
    """Whatever the lean path declines, the full path answers in RFC 6749's format: never a
    500, never a token."""
    headers = {"Authorization": basic(cred.client_id, cred.secret) if auth is None else auth}
    if not headers["Authorization"]:
        headers = {}
    response = HttpClient().post("/oauth2/token", body, FORM, headers=headers)
    assert 400 <= response.status_code < 500, response.content
    assert "error" in response.json() and "access_token" not in response.json()


def test_an_openid_request_is_still_one_statement_on_the_lean_path(org: Organization) -> None:
    """The id_token is signed in memory from the cached record: no extra round trip."""
    c = credentialed(org, scopes=["openid", "profile"], capabilities=["plan"])
    assert request_token(c, scope="openid").status_code == 200  # reads the client once
    issued = lean("issued")
    with CaptureQueriesContext(connection) as queries:
        lean_answer = request_token(c, scope="openid profile")
    assert lean_answer.status_code == 200, lean_answer.content
    sql = statements(queries)
    assert len(sql) == 1 and "oidc_token_issue" in sql[0], sql
    assert lean("issued") == issued + 1
    full_answer = HttpClient().post(
        "/oauth2/token",
        {"grant_type": "client_credentials", "scope": "openid profile"},
        headers={"Authorization": basic(c.client_id, c.secret)},
    )
    assert full_answer.status_code == 200 and lean("issued") == issued + 1
    lean_id = jwt_parts(lean_answer.json()["id_token"])
    full_id = jwt_parts(full_answer.json()["id_token"])
    assert lean_id[0] == full_id[0]
    assert set(lean_id[1]) == set(full_id[1])
    for claim in ("iss", "sub", "aud", "azp", "organization_id", "agent_name", "capabilities"):
        assert lean_id[1][claim] == full_id[1][claim], claim


def test_a_renamed_agent_is_in_the_next_id_token(
    org: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    """The cached record follows the agent (its stamp changes when the agent is saved)."""
    c = credentialed(org, scopes=["openid"])
    assert request_token(c, scope="openid").status_code == 200
    with tenant_context(org.id), django_capture_on_commit_callbacks(execute=True):
        agent_update(
            actor=TEST_ACTOR,
            organization_id=org.id,
            agent_id=c.agent.id,
            changes={"name": "renamed-agent"},
        )
    body = request_token(c, scope="openid").json()
    assert jwt_parts(body["id_token"])[1]["agent_name"] == "renamed-agent"
