"""Raw connections to the test database as a given role, outside Django's test transaction."""

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from django.db import connections


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
