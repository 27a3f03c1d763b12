"""Every error outside the admin is in the documented format, with DEBUG on or off: problem+json
on the API, RFC 6749 error JSON on the OAuth endpoints; never Django's HTML pages."""

from typing import Any

import pytest
from django.conf import settings
from django.test import Client as HttpClient
from django.test.utils import override_settings
from rest_framework.test import APIClient

from agentidp.errors import STANDARD_PROBLEMS
from agentidp.middleware import ErrorFormatMiddleware
from organizations.choices import MemberRole
from tests.factories import StaffFactory

PROBLEM = "application/problem+json"


@pytest.fixture(params=[False, True], ids=["debug-off", "debug-on"])
def debug(request: pytest.FixtureRequest) -> Any:
    with override_settings(DEBUG=request.param):
        yield request.param


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == PROBLEM, response.content[:300]
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"] == f"urn:agentidp:problem:{STANDARD_PROBLEMS[status][0]}" or body[
        "type"
    ].startswith("urn:agentidp:problem:")
    assert "Traceback" not in response.content.decode()
    return body


def test_unknown_paths(debug: bool) -> None:
    assert_problem(HttpClient().get("/no/such/path"), 404)
    assert_problem(HttpClient().post("/.well-known/nothing"), 404)


def test_method_not_allowed(debug: bool) -> None:
    response = HttpClient().delete("/healthz")
    body = assert_problem(response, 405)
    assert body["type"] == "urn:agentidp:problem:method_not_allowed"
    response = HttpClient().get("/oauth2/token")
    assert response.status_code == 405
    assert response.json()["error"] == "invalid_request"
    assert "POST" in response["Allow"]


def test_api_405_keeps_allow(api: APIClient) -> None:
    response = api.put("/agents", {}, format="json")
    assert_problem(response, 405)
    assert "POST" in response["Allow"]


def test_body_over_the_limit_is_413(debug: bool, api: APIClient) -> None:
    big = "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    body = assert_problem(
        api.generic("POST", "/agents", f'{{"name": "{big}"}}', content_type="application/json"),
        413,
    )
    assert str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) in body["detail"]
    response = HttpClient().post(
        "/oauth2/token",
        f"grant_type=client_credentials&x={big}",
        "application/x-www-form-urlencoded",
    )
    assert response.status_code == 413
    assert response.json()["error"] == "invalid_request"


def test_csrf_failure_on_the_api_is_a_problem(debug: bool, staff: Any) -> None:
    client = HttpClient(enforce_csrf_checks=True)
    client.force_login(staff)
    body = assert_problem(client.post("/agents", {"name": "x"}, "application/json"), 403)
    assert "CSRF" in body["detail"]


def test_one_401_problem_type_for_every_path() -> None:
    anonymous = HttpClient().get("/agents")
    bad_token = HttpClient().get("/agents", headers={"Authorization": "Bearer x.y.z"})
    types = {assert_problem(r, 401)["type"] for r in (anonymous, bad_token)}
    assert types == {"urn:agentidp:problem:unauthenticated"}
    assert anonymous["WWW-Authenticate"].startswith("Bearer")
    assert bad_token["WWW-Authenticate"].startswith("Bearer")


@override_settings(ROOT_URLCONF="tests.platform.failing_urls")
def test_a_view_that_raises_is_a_500_problem_without_a_trace(debug: bool) -> None:
    response = HttpClient(raise_request_exception=False).get("/test/raises")
    body = assert_problem(response, 500)
    assert "secret internals" not in response.content.decode()
    assert body["detail"] == "An unexpected error occurred."


@override_settings(ROOT_URLCONF="tests.platform.failing_urls")
def test_a_database_error_in_a_view_is_a_503_with_retry_after(debug: bool) -> None:
    response = HttpClient(raise_request_exception=False).get("/test/database-gone")
    assert_problem(response, 503)
    assert int(response["Retry-After"]) >= 1


def test_admin_pages_stay_html(org: Any) -> None:
    response = HttpClient().get("/admin/no-such-page/")
    assert response.status_code in (302, 404)
    assert "json" not in response.get("Content-Type", "")
    client = HttpClient()
    client.force_login(StaffFactory(organization=org, role=MemberRole.MEMBER))
    for path, status in (("/admin/compliance/auditevent/", 403), ("/admin/no/such/model/", 404)):
        response = client.get(path)
        assert response.status_code == status, path
        assert response["Content-Type"].startswith("text/html"), path


def test_the_middleware_is_outermost_of_ours() -> None:
    """Only the metrics timer and the TLS middleware are outside it; the TLS refusals are
    written in the documented formats themselves (tests/platform/test_tls.py)."""
    path = f"{ErrorFormatMiddleware.__module__}.{ErrorFormatMiddleware.__name__}"
    assert settings.MIDDLEWARE.index(path) == 2
    assert settings.MIDDLEWARE[1] == "agentidp.middleware.TransportSecurityMiddleware"
