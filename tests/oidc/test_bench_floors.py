"""The reference floors ``make bench`` prints next to (b) and (c) measure what they claim: each
adds exactly one layer of the stack to the bare view, and the product's paths are unchanged."""

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client as HttpClient
from django.test.utils import CaptureQueriesContext

from tests.oidc.conftest import Credentialed, statements


@pytest.fixture(autouse=True)
def _bench_urls(settings: Any) -> None:
    settings.ROOT_URLCONF = "bench.floors"


def get(path: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return HttpClient().get(path, headers=headers)


def test_the_transaction_floor_runs_one_statement() -> None:
    with CaptureQueriesContext(connection) as queries:
        response = get("/bench/floor/transaction")
    assert response.status_code == 200
    assert response.json() == {"selected": 1}
    assert statements(queries) == ["SELECT 1"]


def test_the_drf_floor_touches_no_database() -> None:
    with CaptureQueriesContext(connection) as queries:
        response = get("/bench/floor/drf")
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert statements(queries) == []


def test_the_bearer_floor_is_the_bearer_read_without_the_read(
    cred: Credentialed, token_for: Callable[..., str]
) -> None:
    token = token_for(cred)
    path = f"/bench/floor/bearer/{cred.agent.id}"
    with CaptureQueriesContext(connection) as queries:
        response = get(path, token)
    assert response.status_code == 200
    assert response.json() == {"sub": str(cred.agent.id), "path": str(cred.agent.id)}
    sql = statements(queries)
    assert len(sql) == 1, sql
    assert "set_config('app.organization_id'" in sql[0]


def test_the_bearer_floor_refuses_a_missing_or_bad_token(cred: Credentialed) -> None:
    missing = get(f"/bench/floor/bearer/{cred.agent.id}")
    assert missing.status_code == 401
    assert missing["Content-Type"] == "application/problem+json"
    forged = get(f"/bench/floor/bearer/{cred.agent.id}", "eyJhbGciOiJub25lIn0.e30.")
    assert forged.status_code == 401
    assert "invalid_token" in forged["WWW-Authenticate"]


def test_product_paths_are_served_unchanged(
    cred: Credentialed, token_for: Callable[..., str]
) -> None:
    token = token_for(cred, scope="agents:read")
    response = get(f"/agents/{cred.agent.id}", token)
    assert response.status_code == 200
    assert response.json()["id"] == str(cred.agent.id)
    assert get("/healthz").status_code == 200
