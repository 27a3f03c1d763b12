"""Raw connections to the test database as a given role, outside Django's test transaction."""

import os
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from django.db import connections
from psycopg.conninfo import conninfo_to_dict, make_conninfo


@contextmanager
def raw_connection(alias: str = "default") -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A psycopg connection as the alias's role (``default``: the application role)."""
    settings = connections[alias].settings_dict
    test_name = connections["owner"].settings_dict["NAME"]
    conn = psycopg.connect(
        host=settings["HOST"] or None,
        port=settings["PORT"] or None,
        user=settings["USER"],
        dbname=test_name,
    )
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def superuser_connection() -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A psycopg connection to the test database as the server's superuser (what someone who
    runs the database has), with triggers off (``session_replication_role = replica``), as an
    attacker would switch them off. ``make test`` passes the superuser's URL."""
    url = os.environ.get("AGENTIDP_TEST_SUPERUSER_URL", "")
    if not url:
        raise RuntimeError(
            "AGENTIDP_TEST_SUPERUSER_URL is unset: run the suite with make test, or set "
            "DATABASE_ADMIN_URL beside DATABASE_URL"
        )
    test_name = connections["owner"].settings_dict["NAME"]
    conn = psycopg.connect(conninfo_to_dict_replaced(url, dbname=str(test_name)))
    try:
        role = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        assert role is not None and role[0] is True, "the superuser URL is not a superuser's"
        conn.execute("SET session_replication_role = replica")
        yield conn
    finally:
        conn.close()


def conninfo_to_dict_replaced(url: str, **changes: str) -> str:
    """``url`` (a URI or a conninfo string) with some parameters changed."""
    params = conninfo_to_dict(url)
    params.update(changes)
    return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})
