"""Row-level security proven by SQL run as the application role on its own connection."""

import uuid
from collections.abc import Callable
from typing import Any, cast

import psycopg
import pytest
from django.db import connection

from agentidp.errors import TenancyError
from agentidp.tenancy import platform_context, tenant_context
from agents.models import Agent
from tests.dbroles import raw_connection
from tests.factories import AgentFactory, OrganizationFactory

TENANT_TABLES = [
    "agent_did_keys",
    "agents_agent",
    "agents_organizationmember",
    "compliance_auditcheckpoint",
    "compliance_auditevent",
    "compliance_auditchainhead",
    "compliance_auditmerklenode",
    "compliance_datakey",
    "credentials_client",
    "credentials_clientsecret",
    "credentials_agentkey",
    "oidc_accesstoken",
    "oidc_idtoken",
    "oidc_refreshtoken",
    "oidc_resource",
    "oidc_resourcegrant",
    "oidc_revokedtoken",
    "organizations_staffmembership",
    "organizations_tokenusage",
    "federation_federationpartner",
    "federation_partner_resource",
    "webhooks_eventcursor",
    "webhooks_webhookattempt",
    "webhooks_webhookdelivery",
    "webhooks_webhooksubscription",
]


@pytest.fixture
def two_committed_orgs(run_in_threads: Callable[..., list[Any]]) -> dict[str, Any]:
    """Two organizations with an agent each, committed so a separate connection sees them."""

    def build() -> dict[str, Any]:
        a, b = OrganizationFactory(), OrganizationFactory()
        return {
            "a": a,
            "b": b,
            "agent_a": AgentFactory(organization=a, name="alpha"),
            "agent_b": AgentFactory(organization=b, name="bravo"),
        }

    (result,) = run_in_threads(build)
    assert isinstance(result, dict), result
    return cast(dict[str, Any], result)


def _set_org(conn: psycopg.Connection[tuple[object, ...]], org_id: uuid.UUID | None) -> None:
    conn.execute("SELECT set_config('app.organization_id', %s, true)", [str(org_id or "")])


def test_application_role_is_not_privileged() -> None:
    with raw_connection() as conn:
        row = conn.execute(
            "SELECT rolsuper, rolbypassrls, rolinherit FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        owned = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = current_user"
        ).fetchone()
    assert row == (False, False, False)
    assert owned == (0,)


def test_no_organization_set_sees_nothing_and_inserts_nothing(
    two_committed_orgs: dict[str, Any],
) -> None:
    with raw_connection() as conn:
        for table in [*TENANT_TABLES, "organizations_organization"]:
            count = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
            assert count == (0,), table
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "INSERT INTO agents_agent (id, organization_id, name, description, capabilities,"
                " metadata, status, created_at, updated_at) VALUES (%s, %s, 'x', '', '{}', '{}',"
                " 'active', now(), now())",
                [uuid.uuid4(), two_committed_orgs["a"].id],
            )


def test_organization_a_never_sees_or_changes_b(two_committed_orgs: dict[str, Any]) -> None:
    a, b = two_committed_orgs["a"], two_committed_orgs["b"]
    with raw_connection() as conn:
        _set_org(conn, a.id)
        names = [r[0] for r in conn.execute("SELECT name FROM agents_agent").fetchall()]
        assert names == ["alpha"]
        orgs = [r[0] for r in conn.execute("SELECT id FROM organizations_organization")]
        assert orgs == [a.id]
        assert conn.execute(
            "SELECT count(*) FROM compliance_auditevent WHERE organization_id = %s", [b.id]
        ).fetchone() == (0,)
        updated = conn.execute(
            "UPDATE agents_agent SET name = 'stolen' WHERE organization_id = %s", [b.id]
        )
        assert updated.rowcount == 0
        deleted = conn.execute("DELETE FROM agents_agent WHERE organization_id = %s", [b.id])
        assert deleted.rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "UPDATE agents_agent SET organization_id = %s WHERE name = 'alpha'", [b.id]
            )
        conn.rollback()
        # The setting is transaction-local: a new transaction on the same connection sees nothing.
        _set_org(conn, a.id)
        conn.commit()
        assert conn.execute("SELECT count(*) FROM agents_agent").fetchone() == (0,)
    with raw_connection() as conn:
        _set_org(conn, b.id)
        assert [r[0] for r in conn.execute("SELECT name FROM agents_agent")] == ["bravo"]


def test_every_table_with_organization_id_forces_row_security() -> None:
    with raw_connection("owner") as conn:
        rows = conn.execute(
            """SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                      (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)
               FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
               WHERE a.attname = 'organization_id' AND NOT a.attisdropped
                 AND c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace
               ORDER BY c.relname"""
        ).fetchall()
        org_table = conn.execute(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class"
            " WHERE relname = 'organizations_organization'"
        ).fetchone()
    assert sorted(str(r[0]) for r in rows) == sorted(TENANT_TABLES)
    for name, enabled, forced, policies in rows:
        assert (enabled, forced, int(str(policies)) >= 1) == (True, True, True), name
    assert org_table == (True, True)


def test_policies_compare_with_the_transaction_local_setting() -> None:
    with raw_connection("owner") as conn:
        rows = conn.execute(
            "SELECT tablename, qual, with_check FROM pg_policies WHERE schemaname = 'public'"
        ).fetchall()
    assert rows
    for table, qual, with_check in rows:
        expected = "NULLIF(current_setting('app.organization_id'::text, true), ''::text))::uuid"
        assert expected in str(qual), table
        assert expected in str(with_check), table


def test_query_outside_any_context_raises() -> None:
    with pytest.raises(TenancyError, match="agents_agent"):
        list(Agent.objects.all())


def test_tenant_context_scopes_orm_queries(two_committed_orgs: dict[str, Any]) -> None:
    a, b = two_committed_orgs["a"], two_committed_orgs["b"]
    with tenant_context(a.id):
        assert list(Agent.objects.values_list("name", flat=True)) == ["alpha"]
        with tenant_context(b.id):
            assert list(Agent.objects.values_list("name", flat=True)) == ["bravo"]
        # the outer organization is restored on the way out of the inner block
        assert list(Agent.objects.values_list("name", flat=True)) == ["alpha"]


def test_platform_context_crosses_organizations_and_ends(
    two_committed_orgs: dict[str, Any],
) -> None:
    a = two_committed_orgs["a"]
    with tenant_context(a.id):
        with platform_context(reason="tests"):
            names = set(Agent.objects.values_list("name", flat=True))
            assert {"alpha", "bravo"} <= names
            with connection.cursor() as cursor:
                cursor.execute("SELECT current_user")
                assert cursor.fetchone() == ("agentidp_platform",)
        assert list(Agent.objects.values_list("name", flat=True)) == ["alpha"]
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user")
            assert cursor.fetchone() != ("agentidp_platform",)
