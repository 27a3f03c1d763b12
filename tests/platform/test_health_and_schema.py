"""Health, metrics, the OpenAPI schema and error formats outside DRF."""

import re

import pytest
from django.test import Client
from django.test.utils import override_settings

from tests.factories import OrganizationFactory

PROBLEM = "application/problem+json"


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
    assert {"201", "400", "401", "403", "409", "413", "415", "503"} <= set(create)
    assert "Problem" in schema["components"]["schemas"]


def test_every_error_is_documented_as_problem_json_and_oauth_as_oauth_errors() -> None:
    schema = Client().get("/api/schema/?format=json").json()
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if int(status) < 400 or status == "405" and path.startswith("/.well-known"):
                    continue
                content = set(response.get("content", {}))
                # the OAuth endpoints answer OAuth errors; a token status list is a document
                # (draft-ietf-oauth-status-list), its absence a problem like any other
                oauth = path.startswith("/oauth2/") and not path.startswith("/oauth2/status/")
                expected = "application/json" if oauth else PROBLEM
                if path.endswith("/did/resolve") and status not in ("405", "503"):
                    # W3C DID Resolution's HTTP binding: errors are resolution results
                    expected = "application/did-resolution"
                if path.startswith("/.well-known") or path.startswith("/oauth2/"):
                    assert content <= {expected}, (method, path, status)
                else:
                    assert content == {expected}, (method, path, status)


def test_the_oauth_endpoints_are_in_the_schema() -> None:
    schema = Client().get("/api/schema/?format=json").json()
    token = schema["paths"]["/oauth2/token"]["post"]
    form = token["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    grants = [v["properties"]["grant_type"]["enum"][0] for v in form["oneOf"]]
    assert grants == [
        "client_credentials",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "urn:ietf:params:oauth:grant-type:token-exchange",
        "urn:ietf:params:oauth:grant-type:token-exchange",  # by an agent: delegation
        "client_credentials",  # private_key_jwt: an assertion instead of a secret
    ]
    keyed = form["oneOf"][4]
    assert keyed["required"] == ["grant_type", "client_assertion_type", "client_assertion"]
    assert "client_secret" not in keyed["properties"]
    variants = {v["properties"]["grant_type"]["enum"][0]: v for v in form["oneOf"][:3]}
    delegation = form["oneOf"][3]
    assert {"actor_token", "actor_token_type", "client_id", "client_secret"} <= set(
        delegation["properties"]
    )
    assert {"subject_token", "client_id", "client_secret"} <= set(delegation["required"])
    assert {"client_id", "client_secret"} <= set(variants["client_credentials"]["properties"])
    jwt_bearer = variants["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    exchange = variants["urn:ietf:params:oauth:grant-type:token-exchange"]
    assert jwt_bearer["required"] == ["grant_type", "assertion"]
    assert {"subject_token", "subject_token_type"} <= set(exchange["required"])
    # a partner's token is the only credential its grants take: no client credentials
    for partner_grant in (jwt_bearer, exchange):
        assert partner_grant["additionalProperties"] is False
        assert not {"client_id", "client_secret"} & set(partner_grant["properties"])
    flows = schema["components"]["securitySchemes"]["agentClientCredentials"]["flows"]
    assert flows["clientCredentials"]["tokenUrl"] == "/oauth2/token"
    assert {"200", "400", "401", "429", "503"} <= set(token["responses"])
    assert token["security"] == [{"clientBasic": []}, {}]
    for path in ["/oauth2/revoke", "/oauth2/introspect"]:
        assert "post" in schema["paths"][path]
    for path in ["/.well-known/jwks.json", "/.well-known/openid-configuration"]:
        assert "get" in schema["paths"][path]
    assert schema["components"]["schemas"]["OAuthError"]["required"] == ["error"]


def test_the_schema_says_what_the_api_enforces() -> None:
    schema = Client().get("/api/schema/?format=json").json()
    scopes = schema["paths"]["/agents/{agent_pk}/scopes"]["get"]["responses"]["200"]
    assert scopes["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Scopes"
    }, "one object, not an array"
    agent = schema["paths"]["/agents/{id}"]["get"]
    (path_id,) = [p for p in agent["parameters"] if p["in"] == "path"]
    assert path_id["schema"] == {"type": "string", "format": "uuid"}
    assert agent["security"] == [{"bearerAuth": []}, {"sessionAuth": []}]
    listing = schema["paths"]["/agents"]["get"]
    page = {p["name"]: p["schema"] for p in listing["parameters"]}
    assert page["page"]["minimum"] == 1 and page["page_size"]["maximum"] == 200
    assert "404" in listing["responses"], "a page past the last one"
    request = schema["components"]["schemas"]["AgentCreateRequest"]
    assert request["additionalProperties"] is False
    assert request["properties"]["name"]["pattern"] == "^[^\\x00]*$"
    assert request["properties"]["sponsor"]["maxLength"] == 150
    agent = schema["components"]["schemas"]["Agent"]["properties"]
    assert agent["sponsor"]["nullable"] is True and agent["attested_at"]["format"] == "date-time"


@pytest.mark.parametrize(
    ("page", "asset"), [("/api/docs/", "swagger-ui-bundle.js"), ("/api/redoc/", "redoc")]
)
def test_docs_pages_load_their_assets_from_this_server(page: str, asset: str) -> None:
    response = Client().get(page)
    assert response.status_code == 200
    html = response.content.decode()
    sources = re.findall(r'src="([^"]+)"', html)
    assert any(asset in source for source in sources), sources
    assert all(source.startswith("/static/") for source in sources), sources
    assert "cdn" not in html.lower()


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


@pytest.mark.parametrize(
    "asset",
    [
        "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js",
        "/static/drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js",
        "/static/admin/css/base.css",
    ],
)
def test_assets_are_served_by_the_app_with_debug_off(settings: object, asset: str) -> None:
    """gunicorn in production serves the API docs' and the admin's assets too (WhiteNoise)."""
    from django.conf import settings as django_settings

    assert django_settings.DEBUG is False
    response = Client().get(asset)
    assert response.status_code == 200, asset
    body = b"".join(response.streaming_content)  # type: ignore[attr-defined]
    assert len(body) > 1000
