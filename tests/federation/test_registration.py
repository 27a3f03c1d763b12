"""POST /federation/trust and the partners API: a partner is stored only after its metadata,
JWKS (and DID) were fetched and checked; every refusal names its field and stores nothing."""

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwcrypto import jwk
from pytest_httpserver import HTTPServer
from rest_framework.test import APIClient

from agentidp.devenv import free_port
from agentidp.tenancy import tenant_context
from compliance.models import AuditEvent
from federation.models import FederationPartner
from organizations.models import Organization
from tests.dbroles import raw_connection
from tests.factories import OrganizationFactory, StaffFactory
from tests.federation.conftest import ISSUER_HOST, MiniIssuer, new_key

pytestmark = pytest.mark.django_db


def _partners(org: Organization) -> int:
    with tenant_context(org.id):
        return FederationPartner.objects.filter(organization_id=org.id).count()


def test_registration_discovers_the_jwks_and_records_the_partner(
    api: APIClient, org: Organization, mini_issuer: MiniIssuer, register: Any
) -> None:
    created = register(allowed_organizations=["remote-org"], notes="pilot")
    assert created["issuer"] == mini_issuer.issuer
    assert created["jwks_uri"] == f"{mini_issuer.issuer}/jwks"
    assert created["status"] == "active" and created["read_only"] is True
    assert created["allowed_scopes"] == ["agents:read"]
    assert created["allowed_organizations"] == ["remote-org"]
    assert [k["kid"] for k in created["keys"]] == ["ec-1"]
    assert created["last_fetch_result"] == "ok" and created["keys_fetched_at"]
    assert mini_issuer.hits == {"/.well-known/openid-configuration": 1, "/jwks": 1}

    listed = api.get("/federation/partners").json()
    assert [p["id"] for p in listed["results"]] == [created["id"]]
    assert api.get(f"/federation/partners/{created['id']}").json()["issuer"] == mini_issuer.issuer
    with tenant_context(org.id):
        event = AuditEvent.objects.filter(organization_id=org.id).order_by("-sequence").first()
    assert event is not None and event.action == "federation.partner_added"
    assert event.data["issuer"] == mini_issuer.issuer


def test_rfc8414_metadata_is_used_when_there_is_no_openid_configuration(
    mini_issuer: MiniIssuer, register: Any
) -> None:
    mini_issuer.status["/.well-known/openid-configuration"] = 404
    server = mini_issuer.server
    server.clear()
    server.expect_request("/.well-known/oauth-authorization-server").respond_with_json(
        {"issuer": mini_issuer.issuer, "jwks_uri": f"{mini_issuer.issuer}/jwks"}
    )
    server.expect_request("/jwks").respond_with_handler(mini_issuer.handle)
    server.expect_request("/.well-known/openid-configuration").respond_with_data("", status=404)
    assert register()["jwks_uri"] == f"{mini_issuer.issuer}/jwks"


def _refused(api: APIClient, org: Organization, body: dict[str, Any], field: str) -> str:
    before = _partners(org)
    response = api.post("/federation/trust", body, format="json")
    assert response.status_code == 400, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    problem = response.json()
    named = [name for name in problem.get("errors", {}) if name.split("[")[0] == field]
    assert named or field == "body", problem
    assert _partners(org) == before
    return " ".join(m for name in named for m in problem["errors"][name])


def _body(issuer: MiniIssuer, **extra: Any) -> dict[str, Any]:
    return {"issuer": issuer.issuer, "allowed_scopes": ["agents:read"], **extra}


def test_an_unreachable_issuer_is_refused(api: APIClient, org: Organization) -> None:
    # a port on the allowlisted address where nothing listens
    body = {"issuer": f"http://127.0.0.3:{free_port()}", "allowed_scopes": ["agents:read"]}
    assert "could not be reached" in _refused(api, org, body, "issuer")


@pytest.mark.parametrize(
    "issuer",
    ["http://127.0.0.1:8000", "http://169.254.169.254", "http://[::1]:8000", "http://10.0.0.8"],
)
def test_an_issuer_on_a_forbidden_address_is_refused(
    api: APIClient, org: Organization, issuer: str
) -> None:
    body = {"issuer": issuer, "allowed_scopes": ["agents:read"]}
    assert "not allowed" in _refused(api, org, body, "issuer")


def test_metadata_naming_another_issuer_is_refused(
    api: APIClient, org: Organization, mini_issuer: MiniIssuer
) -> None:
    mini_issuer.metadata = {"issuer": "https://evil.example", "jwks_uri": "https://evil.example/k"}
    assert "another issuer" in _refused(api, org, _body(mini_issuer), "issuer")


def test_a_redirecting_issuer_is_not_followed(
    api: APIClient, org: Organization, mini_issuer: MiniIssuer
) -> None:
    mini_issuer.status["/.well-known/openid-configuration"] = 302
    _refused(api, org, _body(mini_issuer), "issuer")


def test_a_jwks_uri_on_another_host_needs_an_explicit_allowance(
    api: APIClient, org: Organization, mini_issuer: MiniIssuer, settings: Any
) -> None:
    keys_host = HTTPServer(host="127.0.0.4", port=0)
    keys_host.expect_request("/jwks").respond_with_handler(mini_issuer.handle)
    keys_host.start()
    other = f"http://127.0.0.4:{keys_host.port}/jwks"
    try:
        refusal = _refused(api, org, _body(mini_issuer, jwks_uri=other), "jwks_uri")
        assert "another host" in refusal
        settings.AGENTIDP["SSRF_ALLOWLIST"] = ["127.0.0.3", "127.0.0.4"]
        response = api.post(
            "/federation/trust",
            _body(mini_issuer, jwks_uri=other, jwks_uri_other_host=True),
            format="json",
        )
    finally:
        keys_host.stop()
    assert response.status_code == 201, response.content
    assert response.json()["jwks_uri"] == other


def _jwk(key: Any, **extra: Any) -> dict[str, Any]:
    return {**key.as_dict(private=False), **extra}


@pytest.mark.parametrize(
    ("keys", "words"),
    [
        ([{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}], "symmetric"),
        ("private", "private key material"),
        ([], "no keys"),
        ("rsa1024", "under 2048 bits"),
        ("off-curve", "not a valid public key"),
        ("no-kid", "no kid"),
        ("enc-only", "no signing key"),
        ("duplicate", "repeated"),
    ],
)
def test_a_jwks_that_is_not_public_signing_keys_is_refused(
    api: APIClient, org: Organization, mini_issuer: MiniIssuer, keys: Any, words: str
) -> None:
    ec = mini_issuer.keys[0]
    if keys == "private":
        keys = [ec.as_dict(private=True)]
    elif keys == "rsa1024":
        small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the weak key refused
        keys = [{**json.loads(jwk.JWK.from_pyca(small.public_key()).export_public()), "kid": "r"}]
    elif keys == "off-curve":
        public = _jwk(ec)
        public["y"] = base64.urlsafe_b64encode(b"\x01" * 32).rstrip(b"=").decode()
        keys = [public]
    elif keys == "no-kid":
        keys = [{k: v for k, v in _jwk(ec).items() if k != "kid"}]
    elif keys == "enc-only":
        keys = [_jwk(ec, use="enc")]
    elif keys == "duplicate":
        keys = [_jwk(ec), _jwk(new_key("EC", "ec-1"))]
    mini_issuer.jwks = json.dumps({"keys": keys}).encode()
    assert words in _refused(api, org, _body(mini_issuer), "jwks_uri")


def test_a_huge_or_slow_jwks_is_refused(
    api: APIClient, org: Organization, mini_issuer: MiniIssuer, settings: Any
) -> None:
    mini_issuer.jwks = b'{"keys": [' + b'{"kty":"EC"},' * 30000 + b"{}]}"
    assert "too large" in _refused(api, org, _body(mini_issuer), "jwks_uri")
    mini_issuer.jwks = None
    mini_issuer.delay = 1.5
    assert "in time" in _refused(api, org, _body(mini_issuer), "issuer")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"issuer": "http://127.0.0.3\x00/x"}, "body"),  # refused by the input boundary
        ({"issuer": "ftp://127.0.0.3/"}, "issuer"),
        ({"issuer": "http://127.0.0.3/?a=b"}, "issuer"),
        ({"allowed_scopes": ["admin:orgs"]}, "allowed_scopes"),
        ({"allowed_scopes": ["openid"]}, "allowed_scopes"),
        ({"allowed_scopes": "agents:read"}, "allowed_scopes"),
        ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"did": "did:key:z6Mk"}, "did"),
        ({"allowed_organizations": [""]}, "allowed_organizations"),
        ({"read_only": "yes"}, "read_only"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    api: APIClient, org: Organization, mini_issuer: MiniIssuer, body: dict[str, Any], field: str
) -> None:
    _refused(api, org, {**_body(mini_issuer), **body}, field)


def test_a_second_registration_of_the_issuer_is_a_conflict(
    api: APIClient, org: Organization, mini_issuer: MiniIssuer, register: Any
) -> None:
    register()
    response = api.post("/federation/trust", _body(mini_issuer), format="json")
    assert response.status_code == 409
    assert _partners(org) == 1


def test_patch_suspends_changes_limits_and_renews(
    api: APIClient, org: Organization, register: Any
) -> None:
    partner = register()
    url = f"/federation/partners/{partner['id']}"
    changed = api.patch(url, {"status": "suspended", "allowed_scopes": []}, format="json")
    assert changed.status_code == 200, changed.content
    assert changed.json()["status"] == "suspended" and changed.json()["allowed_scopes"] == []
    assert api.patch(url, {"status": "expired"}, format="json").status_code == 400
    assert api.patch(url, {"issuer": "http://x"}, format="json").status_code == 400
    back = api.patch(url, {"status": "active", "expires_at": "2099-01-01T00:00:00Z"}, format="json")
    assert back.json()["status"] == "active" and back.json()["expires_at"].startswith("2099")
    with tenant_context(org.id):
        actions = list(
            AuditEvent.objects.filter(organization_id=org.id)
            .order_by("sequence")
            .values_list("action", flat=True)
        )
    assert actions[-2:] == ["federation.partner_updated", "federation.partner_updated"]


def test_delete_removes_the_partner(api: APIClient, org: Organization, register: Any) -> None:
    partner = register()
    assert api.delete(f"/federation/partners/{partner['id']}").status_code == 204
    assert api.get(f"/federation/partners/{partner['id']}").status_code == 404
    assert _partners(org) == 0


def test_refresh_keys_picks_up_a_new_key_and_reports_a_failure(
    api: APIClient, mini_issuer: MiniIssuer, register: Any
) -> None:
    partner = register()
    mini_issuer.keys.append(new_key("OKP", "ed-2"))
    refreshed = api.post(f"/federation/partners/{partner['id']}/refresh-keys")
    assert refreshed.status_code == 200
    assert [k["kid"] for k in refreshed.json()["keys"]] == ["ec-1", "ed-2"]
    mini_issuer.status["/jwks"] = 500
    failed = api.post(f"/federation/partners/{partner['id']}/refresh-keys")
    assert failed.status_code == 400 and "HTTP 500" in failed.json()["detail"]


def test_another_organization_cannot_see_or_change_the_partners(
    client_for: Any, other_org: Organization, org: Organization, register: Any
) -> None:
    partner = register()
    other = client_for(StaffFactory(organization=other_org, role="owner"))
    url = f"/federation/partners/{partner['id']}"
    assert other.get("/federation/partners").json()["results"] == []
    assert other.get(url).status_code == 404
    assert other.patch(url, {"status": "suspended"}, format="json").status_code == 404
    assert other.delete(url).status_code == 404
    assert other.post(f"{url}/refresh-keys").status_code == 404
    assert _partners(org) == 1


def test_anonymous_and_unscoped_callers_are_refused(
    client_for: Any, org: Organization, register: Any
) -> None:
    partner = register()
    anonymous = APIClient()
    member = client_for(StaffFactory(organization=org, role="member"))  # agents:read only
    for client, status in ((anonymous, 401), (member, 403)):
        assert client.get("/federation/partners").status_code == status
        assert client.get(f"/federation/partners/{partner['id']}").status_code == status
        assert client.post("/federation/trust", {}, format="json").status_code == status
        assert (
            client.post("/federation/verify", {"token": "x"}, format="json").status_code == status
        )
    auditor = client_for(StaffFactory(organization=org, role="auditor"))  # federation:read
    assert auditor.get("/federation/partners").status_code == 200
    assert auditor.get(f"/federation/partners/{partner['id']}").status_code == 200
    assert auditor.post("/federation/trust", {}, format="json").status_code == 403
    assert (
        auditor.patch(
            f"/federation/partners/{partner['id']}", {"notes": "x"}, format="json"
        ).status_code
        == 403
    )
    assert auditor.delete(f"/federation/partners/{partner['id']}").status_code == 403


def test_the_table_holds_partners_of_one_organization_per_connection(
    org: Organization, register: Any, run_in_threads: Any
) -> None:
    """RLS as the application role: the committed partner is invisible with no organization
    set and to another organization."""

    def commit() -> tuple[Any, Any]:
        owner, stranger = OrganizationFactory(), OrganizationFactory()
        with tenant_context(owner.id):
            FederationPartner.objects.create(
                organization_id=owner.id, issuer=f"https://{ISSUER_HOST}.example", jwks_uri="x",
                created_by="test",
            )  # fmt: skip
        return owner.id, stranger.id

    ((owner_id, stranger_id),) = run_in_threads(commit)
    with raw_connection() as conn:
        assert conn.execute("SELECT count(*) FROM federation_federationpartner").fetchone() == (0,)
        conn.execute("SELECT set_config('app.organization_id', %s, false)", [str(stranger_id)])
        assert conn.execute("SELECT count(*) FROM federation_federationpartner").fetchone() == (0,)
        conn.execute("SELECT set_config('app.organization_id', %s, false)", [str(owner_id)])
        assert conn.execute("SELECT count(*) FROM federation_federationpartner").fetchone() == (1,)


def test_a_did_listing_the_issuers_keys_is_accepted(
    api: APIClient, org: Organization, mini_issuer: MiniIssuer, register: Any
) -> None:
    mini_issuer.publish_did()
    partner = register(did=mini_issuer.did)
    assert partner["did"] == mini_issuer.did
    assert mini_issuer.hits["/.well-known/did.json"] == 1
    # the issuer adds a key its DID does not list: the refresh is refused, the old keys stay
    mini_issuer.keys.append(new_key("EC", "ec-9"))
    refused = api.post(f"/federation/partners/{partner['id']}/refresh-keys")
    assert refused.status_code == 400 and "does not list" in refused.json()["detail"]
    detail = api.get(f"/federation/partners/{partner['id']}").json()
    assert [k["kid"] for k in detail["keys"]] == ["ec-1"]
    assert detail["last_fetch_result"] == "failed"


@pytest.mark.parametrize("case", ["other-keys", "other-did", "missing", "not-did-web"])
def test_a_did_that_does_not_match_the_issuer_is_refused(
    api: APIClient, org: Organization, mini_issuer: MiniIssuer, case: str
) -> None:
    did = mini_issuer.did
    if case == "other-keys":
        mini_issuer.publish_did(keys=[new_key("EC", "ec-1")])
    elif case == "other-did":
        mini_issuer.publish_did(did="did:web:evil.example")
    elif case == "not-did-web":
        did = "did:example:123"
    refusal = _refused(api, org, _body(mini_issuer, did=did), "did")
    expected = {"other-keys": "does not list", "other-did": "another DID",
                "missing": "HTTP 404", "not-did-web": "did:web"}  # fmt: skip
    assert expected[case] in refusal
