"""Health, metrics, the OpenAPI schema and error formats outside DRF."""

import pytest
from django.test import Client
from django.test.utils import override_settings

from tests.factories import OrganizationFactory


def test_healthz() -> None:
    response = Client().get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_checks_database_and_redis() -> None:
    response = Client().get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json()["checks"] == {"database": "ok", "redis": "ok"}


def test_readyz_reports_redis_down() -> None:
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["redis"] == "unavailable"


def test_metrics_exposes_django_and_agentidp_series() -> None:
    OrganizationFactory()
    body = Client().get("/metrics").content.decode()
    assert "django_http_requests_total_by_method_total" in body
    assert "agentidp_platform_context_entries_total" in body


def test_schema_documents_every_endpoint_with_errors() -> None:
    response = Client().get("/api/schema/?format=json")
    assert response.status_code == 200
    schema = response.json()
    paths = schema["paths"]
    for path in [
        "/agents",
        "/agents/{id}",
        "/agents/{id}/suspend",
        "/agents/{id}/reactivate",
        "/agents/{id}/decommission",
        "/organizations",
        "/organizations/{id}",
        "/organizations/{organization_pk}/members",
        "/audit",
    ]:
        assert path in paths, path
    create = paths["/agents"]["post"]["responses"]
    assert {"201", "400", "401", "403", "409"} <= set(create)
    assert "Problem" in schema["components"]["schemas"]


@pytest.mark.parametrize("page", ["/api/docs/", "/api/redoc/"])
def test_docs_pages(page: str) -> None:
    assert Client().get(page).status_code == 200


def test_unknown_path_is_problem_json() -> None:
    response = Client().get("/no-such-thing")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == 404


def test_wrong_method_and_media_type(api_client_for_org: Client) -> None:
    client = api_client_for_org
    assert client.put("/agents", {}, content_type="application/json").status_code == 405
    response = client.post("/agents", "name=x", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert response["Content-Type"] == "application/problem+json"


@pytest.fixture
def api_client_for_org(staff: object) -> Client:
    from django.contrib.auth.models import User

    assert isinstance(staff, User)
    client = Client()
    client.force_login(staff)
    return client
