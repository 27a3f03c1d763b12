"""private_key_jwt (RFC 7523 2.2): an agent with no secret at all authenticates with an
assertion signed by a key it registered; every way of forging or reusing one is refused.
Assertions are signed with joserfc, a JOSE library independent of ours."""

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.test import Client as HttpClient
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey, import_key
from pytest_httpserver import HTTPServer
from rest_framework.test import APIClient

from agentidp.conf import agentidp_settings
from agentidp.secrets import secret_store
from agentidp.tenancy import tenant_context
from agentidp.usage import redis_client
from agents.models import Agent
from compliance.models import AuditEvent
from did.models import AgentDidKey
from did.services import did_key_path
from oidc.models import AccessToken
from organizations.models import Organization
from tests.factories import AgentFactory
from tests.oidc.conftest import FORM, claims, credentialed
from tests.webhooks.conftest import agentidp_override

pytestmark = pytest.mark.django_db

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
Key = ECKey | RSAKey | OKPKey


def new_key(kind: str = "EC") -> Key:
    parameters: Any = {"kid": uuid.uuid4().hex[:12]}
    if kind == "RSA":
        return RSAKey.generate_key(2048, parameters=parameters)
    if kind == "OKP":
        return OKPKey.generate_key("Ed25519", parameters=parameters)
    return ECKey.generate_key("P-256", parameters=parameters)


def public(key: Key) -> dict[str, Any]:
    exported: dict[str, Any] = key.as_dict(private=False)
    return exported


def sign(
    key: Key, client_id: str, *, alg: str = "ES256", header: dict[str, Any] | None = None,
    **overrides: Any,
) -> str:  # fmt: skip
    now = int(time.time())
    body = {"iss": client_id, "sub": client_id, "aud": agentidp_settings().issuer,
            "iat": now, "exp": now + 60, "jti": str(uuid.uuid4())}  # fmt: skip
    body.update(overrides)
    body = {k: v for k, v in body.items() if v is not None}
    protected = {"alg": alg, "kid": key.kid, **(header or {})}
    return jwt.encode(protected, body, key, algorithms=[alg])


def token(assertion: str, **extra: str) -> Any:
    data = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion, **extra}  # fmt: skip
    return HttpClient().post("/oauth2/token", urlencode(data), FORM)


@pytest.fixture
def keyed(org: Organization, api: APIClient) -> tuple[Agent, Key]:
    """A keys-only agent: no secret exists for it, one EC key is registered."""
    agent = AgentFactory(organization=org)
    key = new_key()
    added = api.post(f"/agents/{agent.id}/keys", {"jwk": public(key)}, format="json")
    assert added.status_code == 201, added.content
    assert added.json()["kid"] == key.kid
    return agent, key


def refused(response: Any) -> None:
    assert response.status_code == 401, response.content
    assert response.json()["error"] == "invalid_client"


def test_a_keys_only_agent_gets_a_token_with_a_signed_assertion(
    org: Organization, keyed: tuple[Agent, Key]
) -> None:
    agent, key = keyed
    client_id = str(agent.id)
    response = token(sign(key, client_id), scope="agents:read")
    assert response.status_code == 200, response.content
    issued = claims(response.json()["access_token"])
    assert issued["sub"] == client_id and issued["client_id"] == client_id
    with tenant_context(org.id):
        row = AccessToken.objects.get(jti=issued["jti"])
        assert row.credential_id is not None  # the key it was issued on
        assert AuditEvent.objects.filter(action="credential.key_added").count() == 1
    # client_id in the form too, as some clients send it: it must name the same client
    assert token(sign(key, client_id), client_id=client_id).status_code == 200
    refused(token(sign(key, client_id), client_id=str(uuid.uuid4())))


@pytest.mark.parametrize(("kind", "alg"), [("EC", "ES256"), ("OKP", "EdDSA"),
                                           ("RSA", "PS256"), ("RSA", "RS256")])  # fmt: skip
def test_every_allowed_algorithm(org: Organization, api: APIClient, kind: str, alg: str) -> None:
    agent = AgentFactory(organization=org)
    key = new_key(kind)
    assert (
        api.post(f"/agents/{agent.id}/keys", {"jwk": public(key)}, format="json").status_code == 201
    )
    response = token(sign(key, str(agent.id), alg=alg))
    assert response.status_code == 200, response.content


def test_a_spent_assertion_is_refused_even_after_redis_forgets_everything(
    keyed: tuple[Agent, Key],
) -> None:
    agent, key = keyed
    assertion = sign(key, str(agent.id))
    assert token(assertion).status_code == 200
    refused(token(assertion))
    redis_client().flushdb()
    refused(token(assertion))


@pytest.mark.parametrize(
    "overrides",
    [
        {"aud": "https://elsewhere.example"},
        {"aud": None},
        {"exp": int(time.time()) + 3600},  # more than five minutes ahead
        {"exp": int(time.time()) - 120},
        {"exp": "soon"},
        {"iat": int(time.time()) + 600},
        {"nbf": int(time.time()) + 600},
        {"jti": None},
        {"sub": "someone-else"},
    ],
)
def test_claims_out_of_bounds_are_refused(
    keyed: tuple[Agent, Key], overrides: dict[str, Any]
) -> None:
    agent, key = keyed
    refused(token(sign(key, str(agent.id), **overrides)))


def test_the_token_endpoint_as_audience_only_where_the_organization_allows_it(
    org: Organization, keyed: tuple[Agent, Key], platform_api: APIClient
) -> None:
    agent, key = keyed
    endpoint = f"{agentidp_settings().issuer}/oauth2/token"
    refused(token(sign(key, str(agent.id), aud=endpoint)))
    changed = platform_api.patch(
        f"/organizations/{org.id}", {"assertion_audience_token_endpoint": True}, format="json"
    )
    assert changed.status_code == 200, changed.content
    assert token(sign(key, str(agent.id), aud=endpoint)).status_code == 200


def _forged_none(client_id: str) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    now = int(time.time())
    body = {"iss": client_id, "sub": client_id, "aud": agentidp_settings().issuer,
            "exp": now + 60, "jti": str(uuid.uuid4())}  # fmt: skip
    return f"{part({'alg': 'none'})}.{part(body)}.sig"


def test_forged_assertions_are_refused(org: Organization, keyed: tuple[Agent, Key]) -> None:
    agent, key = keyed
    client_id = str(agent.id)
    refused(token(_forged_none(client_id)))
    # HS256 keyed with the public key's bytes (the algorithm-confusion attack)
    secret = OctKey.import_key(json.dumps(public(key)).encode())
    refused(token(sign(secret, client_id, alg="HS256", header={"kid": key.kid})))  # type: ignore[arg-type]
    # a valid assertion with its signature altered
    good = sign(key, client_id)
    head, body, signature = good.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    refused(token(f"{head}.{body}.{flipped}"))
    # signed by a key the agent never registered, naming its kid or another
    stranger = new_key()
    refused(token(sign(stranger, client_id)))
    refused(token(sign(stranger, client_id, header={"kid": key.kid})))
    # a key in the header (jwk / jku) is never trusted
    refused(token(sign(stranger, client_id, header={"jwk": public(stranger)})))
    refused(token(sign(key, client_id, header={"jku": "https://evil.example/jwks"})))
    # another agent's key, used for this client
    other = AgentFactory(organization=org)
    refused(token(sign(new_key(), str(other.id))))
    # the wrong assertion type, or a secret and an assertion at once
    refused(token(sign(key, client_id), client_assertion_type="urn:example:other"))
    refused(token(sign(key, client_id), client_secret="x" * 43, client_id=client_id))
    assert token(sign(key, client_id)).status_code == 200  # the key still works
    with tenant_context(org.id):
        failures = AuditEvent.objects.filter(action="auth.failed", subject_id=client_id)
        reasons = {event.data["reason"] for event in failures}
    assert "assertion_signature" in reasons


def test_hostile_keys_are_refused_and_nothing_is_stored(
    org: Organization, api: APIClient, foreign_agent: Agent
) -> None:
    agent = AgentFactory(organization=org)
    path = f"/agents/{agent.id}/keys"
    private = new_key().as_dict(private=True)
    small_rsa = RSAKey.generate_key(1024).as_dict(private=False)
    p384 = ECKey.generate_key("P-384").as_dict(private=False)
    for body in (
        {"jwk": private},
        {"jwk": small_rsa},
        {"jwk": p384},
        {"jwk": OctKey.generate_key(256).as_dict()},
        {"jwk": {**public(new_key()), "alg": "RS256"}},
        {"jwk": {**public(new_key()), "use": "enc"}},
        {"jwk": {"kty": "EC"}},
        {"jwk": "not a key"},
        {"jwks_uri": "http://127.0.0.1:6379/"},
        {"jwks_uri": "https://169.254.169.254/latest/"},
        {"jwk": public(new_key()), "jwks_uri": "https://example.com/jwks"},
        {},
    ):
        response = api.post(path, body, format="json")
        assert response.status_code == 400, (body, response.content)
        assert response["Content-Type"].startswith("application/problem+json")
    assert api.get(path).json() == []
    foreign = api.post(
        f"/agents/{foreign_agent.id}/keys", {"jwk": public(new_key())}, format="json"
    )
    assert foreign.status_code == 404


def test_two_keys_for_rotation_then_a_deleted_key_ends_its_tokens(
    org: Organization, api: APIClient, keyed: tuple[Agent, Key], cred: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    agent, key = keyed
    path = f"/agents/{agent.id}/keys"
    second = new_key("OKP")
    assert api.post(path, {"jwk": public(second)}, format="json").status_code == 201
    assert api.post(path, {"jwk": public(new_key())}, format="json").status_code == 409
    assert sorted(k["kid"] for k in api.get(path).json()) == sorted([str(key.kid), str(second.kid)])
    issued = token(sign(key, str(agent.id))).json()["access_token"]
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(f"{path}/{key.kid}").status_code == 204
    refused(token(sign(key, str(agent.id))))
    assert token(sign(second, str(agent.id), alg="EdDSA")).status_code == 200
    introspected = HttpClient().post(
        "/oauth2/introspect",
        urlencode({"token": issued}),
        FORM,
        HTTP_AUTHORIZATION=cred_basic(cred),
    )
    assert introspected.json() == {"active": False}
    assert api.delete(f"{path}/{key.kid}").status_code == 404


def cred_basic(cred: Any) -> str:
    return "Basic " + base64.b64encode(f"{cred.client_id}:{cred.secret}".encode()).decode()


def test_introspection_and_revocation_take_assertions_too(keyed: tuple[Agent, Key]) -> None:
    agent, key = keyed
    client_id = str(agent.id)
    issued = token(sign(key, client_id)).json()["access_token"]
    form = {"token": issued, "client_assertion_type": ASSERTION_TYPE}
    introspected = HttpClient().post(
        "/oauth2/introspect", urlencode({**form, "client_assertion": sign(key, client_id)}), FORM
    )
    assert introspected.status_code == 200, introspected.content
    assert introspected.json()["active"] is True
    revoked = HttpClient().post(
        "/oauth2/revoke", urlencode({**form, "client_assertion": sign(key, client_id)}), FORM
    )
    assert revoked.status_code == 200, revoked.content


@pytest.fixture
def jwks_server(httpserver: HTTPServer) -> Iterator[HTTPServer]:
    saved = dict(settings.AGENTIDP)
    agentidp_override(
        SSRF_ALLOWLIST=["127.0.0.1"], WEBHOOK_ALLOW_HTTP=True,
        SSRF_ALLOWED_PORTS=[str(httpserver.port)], FEDERATION_FETCH_TIMEOUT_SECONDS=1.0,
    )  # fmt: skip
    yield httpserver
    settings.AGENTIDP.clear()
    settings.AGENTIDP.update(saved)


def test_a_jwks_uri_key_and_its_rotation(
    org: Organization, api: APIClient, jwks_server: HTTPServer
) -> None:
    agent = AgentFactory(organization=org)
    first, second = new_key(), new_key()
    jwks_server.expect_request("/jwks").respond_with_json({"keys": [public(first)]})
    uri = jwks_server.url_for("/jwks")
    added = api.post(f"/agents/{agent.id}/keys", {"jwks_uri": uri}, format="json")
    assert added.status_code == 201, added.content
    assert token(sign(first, str(agent.id))).status_code == 200
    # the agent rotates at its JWKS: an unknown kid refetches it once
    jwks_server.clear()
    jwks_server.expect_request("/jwks").respond_with_json({"keys": [public(first), public(second)]})
    assert token(sign(second, str(agent.id))).status_code == 200
    # a JWKS without a usable key is refused at registration
    other = AgentFactory(organization=org)
    jwks_server.expect_request("/empty").respond_with_json({"keys": []})
    empty = api.post(
        f"/agents/{other.id}/keys", {"jwks_uri": jwks_server.url_for("/empty")}, format="json"
    )
    assert empty.status_code == 400


def test_metadata_advertises_private_key_jwt() -> None:
    document = HttpClient().get("/.well-known/openid-configuration").json()
    assert "private_key_jwt" in document["token_endpoint_auth_methods_supported"]
    assert document["token_endpoint_auth_signing_alg_values_supported"] == [
        "ES256", "EdDSA", "PS256", "RS256",
    ]  # fmt: skip


def test_an_agent_with_a_secret_can_also_use_a_key(org: Organization, api: APIClient) -> None:
    both = credentialed(org)
    key = new_key()
    api.post(f"/agents/{both.agent.id}/keys", {"jwk": public(key)}, format="json")
    assert token(sign(key, both.client_id)).status_code == 200


def test_staff_paste_or_upload_a_public_key_in_the_admin(
    org: Organization, staff: Any, keyed: tuple[Agent, Key]
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.platform.test_admin import _login

    client = _login(staff)
    agent = AgentFactory(organization=org)
    add = "/admin/credentials/agentkey/add/"
    key = new_key()
    pem = key.as_pem(private=False).decode()
    assert client.post(add, {"agent": str(agent.id), "public_key": pem}).status_code == 302
    private_pem = new_key().as_pem(private=True).decode()
    page = client.post(add, {"agent": str(agent.id), "public_key": private_pem})
    assert page.status_code == 200 and "public key only" in page.content.decode()
    upload = SimpleUploadedFile("key.jwk", json.dumps(public(new_key("OKP"))).encode())
    assert client.post(add, {"agent": str(agent.id), "public_key_file": upload}).status_code == 302
    with tenant_context(org.id):
        assert agent.keys.count() == 2
    # the pasted key signs a working assertion (its kid is its RFC 7638 thumbprint)
    with tenant_context(org.id):
        kid = agent.keys.order_by("created_at").first().kid
    pasted = ECKey.import_key(key.as_dict(private=True), parameters={"kid": kid})
    assert token(sign(pasted, str(agent.id))).status_code == 200


def test_an_agent_authenticates_with_the_did_key_it_holds(
    org: Organization, api: APIClient, cred: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """The agent's own (non-custodial) DID verification method is a private_key_jwt key: named
    by its kid or its DID URL, or not named. A rotation retires it: its assertions are refused
    and the tokens issued on them revoked. Another agent's DID key proves nothing."""
    agent = AgentFactory(organization=org)  # no secret, no registered key
    client_id = str(agent.id)
    held = new_key()
    rotated = api.post(
        f"/agents/{agent.id}/did/keys", {"public_key_jwk": public(held)}, format="json"
    )
    assert rotated.status_code == 201, rotated.content
    kid = rotated.json()["kid"]
    with tenant_context(org.id):
        did = Agent.objects.get(id=agent.id).did
    assert did.startswith("did:web:")

    for named in (f"{did}#{kid}", kid):
        answer = token(sign(held, client_id, header={"kid": named}), scope="agents:read")
        assert answer.status_code == 200, (named, answer.content)
    assert claims(answer.json()["access_token"])["sub"] == client_id
    issued = answer.json()["access_token"]
    now = int(time.time())
    unnamed = jwt.encode(
        {"alg": "ES256"}, {"iss": client_id, "sub": client_id, "aud": agentidp_settings().issuer,
                           "iat": now, "exp": now + 60, "jti": str(uuid.uuid4())}, held,
    )  # fmt: skip
    assert token(unnamed).status_code == 200
    refused(token(sign(held, client_id, header={"kid": "another-key"})))

    # another agent's DID key, even a key registered for this one under the DID URL's kid
    intruder = AgentFactory(organization=org)
    theirs = new_key()
    api.post(f"/agents/{intruder.id}/did/keys", {"public_key_jwk": public(theirs)}, format="json")
    refused(token(sign(theirs, client_id, header={"kid": f"{did}#{kid}"})))
    refused(token(sign(theirs, client_id)))

    # the DID key rotated to a custodial one: the agent's key is retired, so is what it signed
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post(f"/agents/{agent.id}/did/keys", {}, format="json").status_code == 201
    refused(token(sign(held, client_id, header={"kid": f"{did}#{kid}"})))
    introspected = HttpClient().post(
        "/oauth2/introspect", urlencode({"token": issued}), FORM,
        HTTP_AUTHORIZATION=cred_basic(cred),
    )  # fmt: skip
    assert introspected.json() == {"active": False}


def test_a_custodial_did_key_never_authenticates(org: Organization, api: APIClient) -> None:
    """The key we generated and hold for the agent's DID (custodial) is not the agent's proof:
    an assertion signed with it is refused."""
    agent = credentialed(org).agent  # its OAuth client exists: the refusal is the key's
    assert api.post(f"/agents/{agent.id}/did/keys", {}, format="json").status_code == 201
    with tenant_context(org.id):
        key = AgentDidKey.objects.get(agent=agent, status="active")
    assert key.custodial
    private = json.loads(str(secret_store().read(did_key_path(org.id, key.kid))["jwk"]))
    signer = import_key(private)
    assert not isinstance(signer, OctKey)
    refused(token(sign(signer, str(agent.id), alg=key.algorithm, header={"kid": key.kid})))
    with tenant_context(org.id):
        failures = AuditEvent.objects.filter(action="auth.failed", subject_id=str(agent.id))
        assert [event.data["reason"] for event in failures] == ["assertion_no_key"]
