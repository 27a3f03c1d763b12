"""Hostile input at every door answers 400 (413 for size) in the endpoint's format: never a
500, never a half-applied change. Each case reproduces a 500 found by hand or by schemathesis."""

import json
from typing import Any

import pytest
from django.test import Client as HttpClient
from rest_framework.test import APIClient

from agentidp.boundary import MAX_JSON_DEPTH, InputRejected, json_parse
from agentidp.tenancy import tenant_context
from agents.models import Agent
from organizations.models import Organization
from tests.oidc.conftest import Credentialed, basic, request_token

PROBLEM = "application/problem+json"


def problem(response: Any, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def oauth_error(response: Any, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert body["error"] and body["error_description"]
    return body


def raw_post(api: APIClient, path: str, body: str | bytes) -> Any:
    """The exact bytes, with the API client's session (Django's client takes bytes as is)."""
    client = HttpClient()
    client.cookies = api.cookies
    return client.generic("POST", path, body, content_type="application/json")


def agent_count(org: Organization) -> int:
    with tenant_context(org.id):
        return Agent.objects.filter(organization_id=org.id).count()


@pytest.mark.parametrize(
    "body",
    [
        "[" * 10_000 + "]" * 10_000,
        '{"name": "deep", "metadata": ' + '{"a": ' * 5_000 + "1" + "}" * 5_000 + "}",
        '{"name": "nul\\u0000"}',
        '{"name": "key", "metadata": {"k\\u0000": 1}}',
        '{"name": "surrogate", "metadata": {"v": "\\udc00"}}',
        '{"name": "huge", "metadata": {"v": 1e400}}',
        '{"name": "nan", "metadata": {"v": NaN}}',
        '{"name": "inf", "metadata": {"v": -Infinity}}',
        '{"name": "digits", "metadata": {"v": ' + "9" * 5000 + "}}",
        '{"name": "dup", "name": "dup2"}',
        b'{"name": "\xff\xfe"}',
        '{"name": ',
    ],
    ids=[
        "array-10000-deep",
        "object-5000-deep",
        "nul-in-string",
        "nul-in-key",
        "lone-surrogate",
        "1e400",
        "NaN",
        "-Infinity",
        "5000-digit-integer",
        "duplicate-key",
        "not-utf8",
        "truncated",
    ],
)
def test_hostile_json_bodies_are_400_and_change_nothing(
    api: APIClient, org: Organization, body: str | bytes
) -> None:
    before = agent_count(org)
    body_json = problem(raw_post(api, "/agents", body))
    assert body_json["type"] == "urn:agentidp:problem:malformed_request"
    assert agent_count(org) == before


def test_the_depth_limit_is_exact() -> None:
    assert json_parse(("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH).encode()) is not None
    with pytest.raises(InputRejected, match="deeper"):
        json_parse(("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)).encode())
    # brackets inside strings are text, not nesting
    assert json_parse(json.dumps({"s": "[" * 1000}).encode()) == {"s": "[" * 1000}


def test_hostile_json_on_rotate_is_400(api: APIClient, agent: Agent) -> None:
    issued = api.post(f"/agents/{agent.id}/credentials", {}, format="json")
    assert issued.status_code == 201, issued.content
    path = f"/agents/{agent.id}/credentials/{issued.json()['credential']['id']}/rotate"
    problem(raw_post(api, path, "[" * 10_000 + "]" * 10_000))
    problem(raw_post(api, path, '{"grace_seconds": 1e400}'))


def test_patch_with_nul_metadata_is_400(api: APIClient, agent: Agent) -> None:
    response = api.generic(
        "PATCH",
        f"/agents/{agent.id}",
        '{"metadata": {"note": "a\\u0000b"}}',
        content_type="application/json",
    )
    problem(response)


@pytest.mark.parametrize("path", ["/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"])
def test_nul_in_client_id_at_oauth_endpoints(path: str) -> None:
    response = HttpClient().post(
        path, {"grant_type": "client_credentials", "client_id": "a\x00b", "client_secret": "x"}
    )
    assert oauth_error(response)["error"] == "invalid_request"
    response = HttpClient().post(
        path, {"token": "t"}, headers={"Authorization": basic("a\x00b", "secret")}
    )
    assert response.status_code in (400, 401), response.content
    assert response["Content-Type"] == "application/json"


def test_nul_in_resource_at_the_token_endpoint(cred: Credentialed) -> None:
    response = HttpClient().post(
        "/oauth2/token",
        {"grant_type": "client_credentials", "resource": "https://svc.example/\x00"},
        headers={"Authorization": basic(cred.client_id, cred.secret)},
    )
    assert oauth_error(response)["error"] == "invalid_request"


def test_nul_in_query_and_path(api: APIClient) -> None:
    problem(api.get("/agents", {"name": "a\x00"}))
    problem(api.get("/audit", {"action": "agent.\x00"}))
    assert api.get("/agents/%00").status_code in (400, 404)


@pytest.mark.parametrize(
    "cursor", ["cD1hYmM=", "cD0xJnI9eA==", "bz0tMQ==", "w7w=", "cD0xZTk5OTk5OTk5OTk5"]
)
def test_crafted_audit_cursors_are_400(api: APIClient, cursor: str) -> None:
    body = problem(api.get("/audit", {"cursor": cursor}))
    assert "cursor" in body["errors"]


@pytest.mark.parametrize("page", ["0", "-1", "abc", "1.5", "٣", "1e3", ""])
def test_malformed_page_numbers_are_400(api: APIClient, page: str) -> None:
    body = problem(api.get("/agents", {"page": page}))
    assert "page" in body["errors"]


def test_a_page_past_the_end_is_a_documented_404(api: APIClient) -> None:
    problem(api.get("/agents", {"page": "999"}), 404)


def test_a_huge_page_number_is_past_the_end(api: APIClient) -> None:
    problem(api.get("/agents", {"page": "99999999999999999999"}), 404)


# --- credentials in the URI ----------------------------------------------------------------


def test_a_bearer_token_in_the_query_string_is_refused(
    cred: Credentialed,
) -> None:
    """RFC 6750 2.3 lets a server take ``access_token`` from the URI; this one refuses it,
    before anything reads it: URIs are logged, cached and sent on in Referer headers."""
    token = request_token(cred).json()["access_token"]
    for path in (f"/agents?access_token={token}", f"/agent-info?access_token={token}",
                 f"/agents?ACCESS_TOKEN={token}&page_size=1"):  # fmt: skip
        response = HttpClient().get(path)
        body = problem(response)
        assert "access_token" in body["detail"] and token not in response.content.decode()
        assert 'error="invalid_request"' in response["WWW-Authenticate"]
    # even beside a header that would have been accepted
    both = HttpClient().get(
        f"/agents?access_token={token}", headers={"Authorization": f"Bearer {token}"}
    )
    problem(both)


@pytest.mark.parametrize(
    "name", ["client_secret", "client_assertion", "assertion", "subject_token", "token"]
)
def test_client_credentials_in_the_token_endpoints_uri_are_refused(name: str) -> None:
    for path in ("/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"):
        response = HttpClient().post(
            f"{path}?{name}=secret-value", {"grant_type": "client_credentials"}
        )
        body = oauth_error(response)
        assert body["error"] == "invalid_request" and name in body["error_description"]
        assert response["Cache-Control"] == "no-store"


def test_logs_never_carry_a_credential_from_a_url() -> None:
    import logging

    from agentidp.logs import RedactCredentials, redact

    line = '"GET /agents?access_token=eyJ.a.b&page=2&client_secret=s3cr%3Dt HTTP/1.1" 400'
    assert redact(line) == (
        '"GET /agents?access_token=[redacted]&page=2&client_secret=[redacted] HTTP/1.1" 400'
    )
    assert redact("token_type_hint=x&token=abc subject_token=q") == (
        "token_type_hint=x&token=[redacted] subject_token=[redacted]"
    )
    record = logging.LogRecord(
        "django.server", logging.INFO, __file__, 1, '"%s" %s %s',
        ("GET /agent-info?assertion=header.payload.sig HTTP/1.1", "400", "99"), None,
    )  # fmt: skip
    assert RedactCredentials().filter(record) is True
    assert record.getMessage() == '"GET /agent-info?assertion=[redacted] HTTP/1.1" 400 99'
