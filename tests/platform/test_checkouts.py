"""Two checkouts running ``make test`` at once against the same PostgreSQL server: each suite
creates (and drops) a test database named after its checkout, so neither clobbers the other's,
nor this run's own."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections

from agentidp.devenv import ROOT
from tests.dbroles import raw_connection

pytestmark = pytest.mark.django_db(databases=[])


def _suite(tag: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "AGENTIDP_CHECKOUT_TAG": tag}
    environment.pop("PYTEST_ADDOPTS", None)
    for variable in ("COV_CORE_SOURCE", "COV_CORE_CONFIG", "COV_CORE_DATAFILE"):
        environment.pop(variable, None)
    return subprocess.run(  # noqa: S603 - our own suite
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/platform/test_rls.py::test_every_table_with_organization_id_forces_row_security"],
        env=environment, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def test_two_suites_set_their_databases_up_at_once() -> None:
    ours = str(connections["owner"].settings_dict["NAME"])
    tags = [f"other{os.getpid()}a", f"other{os.getpid()}b"]
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(_suite, tags))
    for tag, result in zip(tags, done, strict=True):
        assert result.returncode == 0, f"{tag}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    with raw_connection("owner") as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname = ANY(%s)",
            [[ours, *(f"test_agentidp_{tag}" for tag in tags)]],
        ).fetchall()
    present = {str(row[0]) for row in rows}
    assert present == {ours}  # each dropped its own at the end, and ours is still here
