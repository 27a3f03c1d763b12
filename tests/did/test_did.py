"""did:web DIDs: the identifier mapping, keys on registration, the public documents, DID
resolution, deactivation, caching and conditional requests."""

import base64
import json
import uuid
from io import StringIO
from typing import Any

import pytest
import rfc8785
from django.core.management import call_command
from django.db import connection, connections, transaction
from django.http import JsonResponse
from django.test import Client as HttpClient
from django.test.utils import CaptureQueriesContext
from django.utils.http import http_date
from joserfc import jws as joserfc_jws
from joserfc.errors import BadSignatureError
from joserfc.jwk import import_key as jose_key
from jwcrypto import jwk, jws
from pydid import DIDDocument
from rest_framework.test import APIClient

from agentidp.secrets import SecretNotFound, secret_store
from agentidp.tenancy import platform_context, tenant_context
from agents.models import Agent
from agents.services import agent_decommission, agent_suspend
from compliance.models import AuditEvent
from compliance.services import audit_chain_verify
from did.backfill import dids_backfill
from did.cache import did_documents_forget
from did.models import AgentDidKey
from did.services import did_key_path
from did.web import InvalidDid, agent_did, agent_id_of, did_for_url, instance_did, url_for_did
from organizations.models import Organization
from organizations.services import organization_suspend
from tests import private_keys
from tests.factories import TEST_ACTOR, AgentFactory, OrganizationFactory
from tests.oidc.conftest import credentialed, request_token
from tests.oidc.test_bearer import b64

PRIVATE = {"d", "p", "q", "dp", "dq", "qi", "k"}


@pytest.mark.parametrize(
    ("base", "segments", "did", "url"),
    [
        ("https://example.com", (), "did:web:example.com", "https://example.com/.well-known/did.json"),
        ("https://localhost:8443", (), "did:web:localhost%3A8443", "https://localhost:8443/.well-known/did.json"),
        ("https://Example.COM/idp/", (), "did:web:example.com:idp", "https://example.com/idp/did.json"),
        ("https://example.com:8443/a/b", ("agents", "42"), "did:web:example.com%3A8443:a:b:agents:42",
         "https://example.com:8443/a/b/agents/42/did.json"),
        ("http://localhost:8000", ("agents", "x y"), "did:web:localhost%3A8000:agents:x%20y",
         "https://localhost:8000/agents/x%20y/did.json"),
    ],
)  # fmt: skip
def test_did_web_mapping_both_ways(
    base: str, segments: tuple[str, ...], did: str, url: str
) -> None:
    assert did_for_url(base, *segments) == did
    assert url_for_did(did) == url


@pytest.mark.parametrize(
    "bad",
    ["did:key:z6Mk", "did:web:", "did:web:example.com::x", "did:web:exa mple.com",
     "did:web:example.com#key-1", "did:web:example.com?x=1", "did:web:example.com:a%2Fb",
     "did:web:evil.com%2Fpath", "did:web:example.com\x00"],
)  # fmt: skip
def test_malformed_dids_are_refused(bad: str) -> None:
    with pytest.raises(InvalidDid):
        url_for_did(bad)


def test_an_agent_did_of_another_host_is_not_ours(settings: Any) -> None:
    agent_id = uuid.uuid4()
    assert agent_id_of(agent_did(agent_id)) == agent_id
    for foreign in (
        f"did:web:evil.example:agents:{agent_id}",
        f"{instance_did()}:agents:not-a-uuid",
        f"{instance_did()}:other:{agent_id}",
    ):
        with pytest.raises(InvalidDid):
            agent_id_of(foreign)


def _document(agent_id: Any, path: str = "did.json", **headers: str) -> Any:
    return HttpClient().get(f"/agents/{agent_id}/{path}", headers=headers)


def test_registration_gives_the_agent_a_did_and_a_custodial_key(org: Organization) -> None:
    agent = AgentFactory(organization=org)
    assert agent.did == agent_did(agent.id) and agent.did_created_at is not None
    with tenant_context(org.id):
        (key,) = AgentDidKey.objects.filter(agent=agent)
        event = AuditEvent.objects.get(action="did.created", subject_id=str(agent.id))
    assert key.status == "active" and key.custodial and key.algorithm == "EdDSA"
    assert key.public_jwk["crv"] == "Ed25519" and not PRIVATE & set(key.public_jwk)
    stored = json.loads(secret_store().read(did_key_path(org.id, key.kid))["jwk"])
    assert stored["x"] == key.public_jwk["x"] and "d" in stored  # the private part: store only
    assert event.data == {"did": agent.did, "kid": key.kid, "algorithm": "EdDSA", "custodial": True}


def test_an_organization_may_choose_p256(org: Organization) -> None:
    with platform_context(reason="tests"):
        Organization.objects.filter(id=org.id).update(did_key_algorithm="P-256")
    agent = AgentFactory(organization=org)
    document = _body(_document(agent.id))
    (method,) = document["verificationMethod"]
    assert method["publicKeyJwk"]["crv"] == "P-256" and method["publicKeyJwk"]["kty"] == "EC"


def test_the_agent_document_is_public_valid_and_the_same_on_both_paths(
    org: Organization, settings: Any
) -> None:
    agent = AgentFactory(organization=org)
    response = _document(agent.id)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/did+ld+json"
    assert response["ETag"] and response["Last-Modified"] and "max-age" in response["Cache-Control"]
    document = _body(response)
    assert _body(_document(agent.id, "did")) == document
    parsed = DIDDocument.deserialize(document)
    assert str(parsed.id) == agent.did
    assert document["@context"][0] == "https://www.w3.org/ns/did/v1"
    assert document["controller"] == instance_did()
    (method,) = document["verificationMethod"]
    assert method["type"] == "JsonWebKey2020" and method["controller"] == agent.did
    assert method["id"].startswith(agent.did + "#")
    assert document["authentication"] == document["assertionMethod"] == [method["id"]]
    assert not PRIVATE & set(method["publicKeyJwk"])
    issuer = settings.AGENTIDP["ISSUER"]
    endpoints = {service["type"]: service["serviceEndpoint"] for service in document["service"]}
    assert endpoints == {
        "AgentCard": f"{issuer}/agents/{agent.id}/did/card",
        "OAuth2TokenEndpoint": f"{issuer}/oauth2/token",
    }
    for service in document["service"]:
        assert service["id"].startswith(agent.did + "#")


def test_the_instance_document_lists_the_signing_keys(org: Organization) -> None:
    cred = credentialed(org)
    assert request_token(cred).status_code == 200  # the signing keys exist
    jwks = {key["kid"] for key in HttpClient().get("/.well-known/jwks.json").json()["keys"]}
    for path in ("/.well-known/did.json", "/did.json"):
        response = HttpClient().get(path)
        assert response.status_code == 200
        document = _body(response)
        DIDDocument.deserialize(document)
        assert document["id"] == instance_did()
        listed = {method["id"].split("#", 1)[1] for method in document["verificationMethod"]}
        assert listed == jwks
        for method in document["verificationMethod"]:
            assert not PRIVATE & set(method["publicKeyJwk"])


def test_conditional_requests_get_304(org: Organization) -> None:
    agent = AgentFactory(organization=org)
    first = _document(agent.id)
    again = _document(agent.id, **{"If-None-Match": first["ETag"]})
    assert again.status_code == 304 and again["ETag"] == first["ETag"] and not again.content
    assert _document(agent.id, **{"If-None-Match": '"other"'}).status_code == 200
    later = http_date(2_000_000_000)
    assert _document(agent.id, **{"If-Modified-Since": later}).status_code == 304
    assert _document(agent.id, **{"If-Modified-Since": http_date(0)}).status_code == 200


def test_documents_are_served_from_the_cache(org: Organization) -> None:
    agent = AgentFactory(organization=org)
    first = _body(_document(agent.id))
    with CaptureQueriesContext(connection) as queries:
        assert _body(_document(agent.id)) == first
    assert not [q for q in queries.captured_queries if "agent" in q["sql"]]


def test_decommissioning_deactivates_the_did(
    org: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    agent = AgentFactory(organization=org)
    assert _document(agent.id).status_code == 200  # cached now
    assert _body(_resolve(agent.id))["didDocumentMetadata"]["deactivated"] is False
    with tenant_context(org.id), django_capture_on_commit_callbacks(execute=True):
        agent_decommission(actor=TEST_ACTOR, organization_id=org.id, agent_id=agent.id)
    for path in ("did.json", "did"):
        gone = _document(agent.id, path)
        assert gone.status_code == 410 and gone["Content-Type"] == "application/problem+json"
    resolved = _resolve(agent.id)
    assert resolved.status_code == 410
    assert _body(resolved)["didDocumentMetadata"]["deactivated"] is True
    with tenant_context(org.id):
        assert AuditEvent.objects.filter(action="did.deactivated", subject_id=str(agent.id))


def test_a_suspended_agents_did_still_resolves(
    org: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    agent = AgentFactory(organization=org)
    with tenant_context(org.id), django_capture_on_commit_callbacks(execute=True):
        agent_suspend(actor=TEST_ACTOR, organization_id=org.id, agent_id=agent.id)
    assert _document(agent.id).status_code == 200
    resolved = _body(_resolve(agent.id))
    assert resolved["didDocumentMetadata"]["deactivated"] is False


def _resolve(agent_id: Any, accept: str | None = None) -> Any:
    headers = {"Accept": accept} if accept else {}
    return HttpClient().get(f"/agents/{agent_id}/did/resolve", headers=headers)


def _body(response: Any) -> Any:
    """The JSON body whatever its media type (application/did-resolution, did+json, ...)."""
    return json.loads(response.content)


def test_resolution_result_and_content_negotiation(org: Organization) -> None:
    agent = AgentFactory(organization=org)
    document = _body(_document(agent.id))
    result = _resolve(agent.id)
    assert result.status_code == 200 and result["Content-Type"] == "application/did-resolution"
    body = _body(result)
    assert body["didDocument"] == document
    assert body["didResolutionMetadata"] == {"contentType": "application/did+ld+json"}
    metadata = body["didDocumentMetadata"]
    assert set(metadata) == {"created", "updated", "deactivated", "versionId"}
    assert metadata["created"].endswith("Z") and metadata["deactivated"] is False
    assert _body(_resolve(agent.id, "application/did-resolution")) == body
    ld = _resolve(agent.id, "application/did+ld+json")
    assert ld["Content-Type"] == "application/did+ld+json" and _body(ld) == document
    plain = _resolve(agent.id, "application/did+json")
    assert plain["Content-Type"] == "application/did+json"
    assert _body(plain) == {k: v for k, v in document.items() if k != "@context"}
    refused = _resolve(agent.id, "text/html")
    assert refused.status_code == 406
    assert _body(refused)["didResolutionMetadata"]["error"] == "representationNotSupported"


def test_resolution_errors(org: Organization) -> None:
    missing = _resolve(uuid.uuid4())
    assert missing.status_code == 404
    assert _body(missing)["didResolutionMetadata"]["error"] == "notFound"
    for bad in ("not-a-uuid", "1" * 500, "did:web:evil.example"):
        malformed = _resolve(bad)
        assert malformed.status_code == 400, bad
        assert _body(malformed)["didResolutionMetadata"]["error"] == "invalidDid"
    assert _document(uuid.uuid4()).status_code == 404
    assert _document("not-a-uuid").status_code == 400
    assert HttpClient().post(f"/agents/{uuid.uuid4()}/did.json").status_code == 405


def test_another_organizations_token_reads_only_the_public_document(
    org: Organization, other_org: Organization, client_for: Any, staff: Any
) -> None:
    agent = AgentFactory(organization=org)
    outsider = credentialed(other_org)
    token = HttpClient().post(
        "/oauth2/token", {"grant_type": "client_credentials", "client_id": outsider.client_id,
                          "client_secret": outsider.secret},
    ).json()["access_token"]  # fmt: skip
    headers = {"Authorization": f"Bearer {token}"}
    public = HttpClient().get(f"/agents/{agent.id}/did.json", headers=headers)
    assert public.status_code == 200 and _body(public)["id"] == agent.did
    assert HttpClient().get(f"/agents/{agent.id}", headers=headers).status_code == 404
    assert HttpClient().get(f"/agents/{agent.id}/client", headers=headers).status_code == 404


def test_registration_with_the_secret_store_down_writes_nothing(
    org: Organization, settings: Any, client_for: Any, staff: Any
) -> None:
    api: APIClient = client_for(staff)
    vault = settings.AGENTIDP["VAULT"]
    reachable = vault["ADDR"]
    vault["ADDR"] = "http://127.0.0.1:9"
    secret_store.cache_clear()
    try:
        response = api.post("/agents", {"name": "needs-a-did"}, format="json")
    finally:
        vault["ADDR"] = reachable
        secret_store.cache_clear()
    assert response.status_code == 503, response.content
    assert response["Content-Type"] == "application/problem+json" and response["Retry-After"]
    with tenant_context(org.id):
        assert not Agent.objects.filter(name="needs-a-did").exists()
        assert not AuditEvent.objects.filter(action="agent.created", data__name="needs-a-did")


def test_ensuredids_gives_dids_to_agents_without_one_and_is_safe_to_rerun(
    org: Organization,
) -> None:
    agent = AgentFactory(organization=org)
    with tenant_context(org.id):
        Agent.objects.filter(id=agent.id).update(did="")
        AgentDidKey.objects.filter(agent_id=agent.id).delete()
    out = StringIO()
    call_command("ensuredids", "--org", org.slug, stdout=out)
    assert json.loads(out.getvalue()) == {"created": [agent_did(agent.id)]}
    out = StringIO()
    call_command("ensuredids", "--org", org.slug, stdout=out)
    assert json.loads(out.getvalue()) == {"created": []}
    with tenant_context(org.id):
        assert AgentDidKey.objects.filter(agent_id=agent.id).count() == 1
    assert _body(_document(agent.id))["id"] == agent_did(agent.id)


def test_rls_keeps_did_keys_within_their_organization(org: Organization) -> None:
    other = OrganizationFactory()
    mine, theirs = AgentFactory(organization=org), AgentFactory(organization=other)
    with tenant_context(org.id):
        visible = set(AgentDidKey.objects.values_list("agent_id", flat=True))
    assert mine.id in visible and theirs.id not in visible


def _keys_api(client_for: Any, staff: Any) -> APIClient:
    api: APIClient = client_for(staff)
    return api


def test_custodial_rotation_keeps_the_retired_key_listed(
    org: Organization, client_for: Any, staff: Any, django_capture_on_commit_callbacks: Any,
    settings: Any,
) -> None:  # fmt: skip
    agent = AgentFactory(organization=org)
    api = _keys_api(client_for, staff)
    before = _body(_document(agent.id))  # cached
    (old,) = api.get(f"/agents/{agent.id}/did/keys").json()
    with django_capture_on_commit_callbacks(execute=True):
        rotated = api.post(f"/agents/{agent.id}/did/keys", {}, format="json")
    assert rotated.status_code == 201, rotated.content
    new = rotated.json()
    assert new["custodial"] is True and new["status"] == "active" and new["kid"] != old["kid"]
    assert "d" not in new["public_jwk"]
    after = _body(_document(agent.id))  # the cache was forgotten
    assert after != before
    listed = [method["id"].split("#")[1] for method in after["verificationMethod"]]
    assert listed == [old["kid"], new["kid"]]
    assert after["authentication"] == after["assertionMethod"] == [f"{agent.did}#{new['kid']}"]
    with tenant_context(org.id):
        event = AuditEvent.objects.get(action="did.key_rotated", subject_id=str(agent.id))
    assert event.data["retired"] == [old["kid"]] and event.data["kid"] == new["kid"]
    settings.AGENTIDP = {**settings.AGENTIDP, "DID_KEY_RETIRED_SECONDS": 0}
    did_documents_forget(agent.id)
    expired = _body(_document(agent.id))
    assert [m["id"].split("#")[1] for m in expired["verificationMethod"]] == [new["kid"]]


def test_an_agent_registers_its_own_public_key(
    org: Organization, client_for: Any, staff: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """Non-custodial: the agent keeps its private key; a signature it makes verifies with the
    key its DID document lists."""
    agent = AgentFactory(organization=org)
    own = jwk.JWK.generate(kty="OKP", crv="Ed25519")
    api = _keys_api(client_for, staff)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            f"/agents/{agent.id}/did/keys",
            {"public_key_jwk": own.export_public(as_dict=True)},
            format="json",
        )
    assert response.status_code == 201, response.content
    assert response.json()["custodial"] is False and response.json()["kid"] == own.thumbprint()
    with pytest.raises(SecretNotFound):
        secret_store().read(did_key_path(org.id, own.thumbprint()))
    document = _body(_document(agent.id))
    (active,) = document["assertionMethod"]
    method = next(m for m in document["verificationMethod"] if m["id"] == active)
    signed = jws.JWS(b"hello from the agent")
    signed.add_signature(own, alg="EdDSA", protected=json.dumps({"alg": "EdDSA"}))
    verifier = jws.JWS()
    verifier.deserialize(signed.serialize())
    verifier.verify(jwk.JWK(**method["publicKeyJwk"]))
    assert verifier.payload == b"hello from the agent"


@pytest.mark.parametrize(
    "bad",
    [
        {"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "d": "AAAA"},
        {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
        {"kty": "oct", "k": "c2VjcmV0"},
        {"kty": "OKP", "crv": "Ed25519", "x": "not base64!\x00"},
        {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
        {"kty": "OKP", "crv": "X25519", "x": "AAAA"},
    ],
)
def test_bad_agent_keys_are_refused(
    org: Organization, client_for: Any, staff: Any, bad: dict[str, str]
) -> None:
    agent = AgentFactory(organization=org)
    api = _keys_api(client_for, staff)
    response = api.post(f"/agents/{agent.id}/did/keys", {"public_key_jwk": bad}, format="json")
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert len(api.get(f"/agents/{agent.id}/did/keys").json()) == 1


def test_keys_of_another_organizations_agent_are_not_found(
    org: Organization, other_org: Organization, client_for: Any, staff: Any
) -> None:
    foreign = AgentFactory(organization=other_org)
    api = _keys_api(client_for, staff)
    assert api.get(f"/agents/{foreign.id}/did/keys").status_code == 404
    assert api.post(f"/agents/{foreign.id}/did/keys", {}, format="json").status_code == 404
    with tenant_context(other_org.id):
        assert AgentDidKey.objects.filter(agent_id=foreign.id).count() == 1


SKILLS = [
    {"id": "search", "name": "Web search", "description": "Finds pages", "tags": ["web"]},
    {"id": "summarize", "name": "Summaries"},
]


def _card(agent_id: Any, card_format: str | None = None) -> Any:
    query = f"?format={card_format}" if card_format else ""
    return HttpClient().get(f"/agents/{agent_id}/did/card{query}")


def test_the_a2a_card_is_signed_over_its_jcs_form_by_a_key_of_the_instance_did(
    org: Organization, client_for: Any, staff: Any, settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    agent = AgentFactory(organization=org, description="Reads the web")
    api: APIClient = client_for(staff)
    with django_capture_on_commit_callbacks(execute=True):
        edited = api.patch(
            f"/agents/{agent.id}",
            {"skills": SKILLS, "version": "2.1.0", "authors": ["Ops <ops@example.com>"]},
            format="json",
        )
    assert edited.status_code == 200, edited.content
    response = _card(agent.id)
    assert response.status_code == 200 and response["ETag"]
    card = response.json()
    issuer = settings.AGENTIDP["ISSUER"]
    assert card["name"] == agent.name and card["description"] == "Reads the web"
    assert card["version"] == "2.1.0" and card["url"] == f"{issuer}/agents/{agent.id}"
    assert [skill["id"] for skill in card["skills"]] == ["search", "summarize"]
    assert card["defaultInputModes"] and card["defaultOutputModes"]
    flow = card["securitySchemes"]["agentidp"]["flows"]["clientCredentials"]
    assert flow["tokenUrl"] == f"{issuer}/oauth2/token"
    (extension,) = card["capabilities"]["extensions"]
    assert extension["params"] == {"did": agent.did, "status": "active"}
    # Verify as a stranger would: the kid names a verification method of the instance DID.
    (entry,) = card["signatures"]
    header = json.loads(base64.urlsafe_b64decode(entry["protected"] + "=="))
    assert header["typ"] == "JOSE" and header["kid"].startswith(instance_did() + "#")
    instance = HttpClient().get("/.well-known/did.json").json()
    method = next(m for m in instance["verificationMethod"] if m["id"] == header["kid"])
    unsigned = {key: value for key, value in card.items() if key != "signatures"}
    compact = f"{entry['protected']}.{b64(rfc8785.dumps(unsigned))}.{entry['signature']}"
    verified = joserfc_jws.deserialize_compact(
        compact, jose_key(method["publicKeyJwk"]), algorithms=[header["alg"]]
    )
    assert json.loads(verified.payload) == unsigned
    tampered = {**unsigned, "name": "someone else"}
    with pytest.raises(BadSignatureError):
        joserfc_jws.deserialize_compact(
            f"{entry['protected']}.{b64(rfc8785.dumps(tampered))}.{entry['signature']}",
            jose_key(method["publicKeyJwk"]),
            algorithms=[header["alg"]],
        )


def test_the_agntcy_record(org: Organization, settings: Any) -> None:
    agent = AgentFactory(organization=org, skills=SKILLS, authors=["Ops"], version="3.0.0")
    record = _card(agent.id, "agntcy").json()
    issuer = settings.AGENTIDP["ISSUER"]
    assert record["name"] == agent.name and record["version"] == "3.0.0"
    assert record["schema_version"] and record["authors"] == ["Ops"]
    assert record["did"] == agent.did and record["created_at"].endswith("Z")
    assert record["skills"] == [{"id": "search", "name": "Web search"},
                                {"id": "summarize", "name": "Summaries"}]  # fmt: skip
    assert {"type": "a2a-agent-card", "url": f"{issuer}/agents/{agent.id}/did/card?format=a2a"} in (
        record["locators"]
    )
    assert _card(agent.id, "other").status_code == 400
    assert _card("not-a-uuid").status_code == 400 and _card(uuid.uuid4()).status_code == 404


def test_cards_follow_the_agent_its_status_and_its_organization(
    org: Organization, client_for: Any, staff: Any, django_capture_on_commit_callbacks: Any
) -> None:
    agent = AgentFactory(organization=org)
    assert _card(agent.id).json()["name"] == agent.name  # cached now
    api: APIClient = client_for(staff)
    with django_capture_on_commit_callbacks(execute=True):
        api.patch(f"/agents/{agent.id}", {"name": "renamed"}, format="json")
    assert _card(agent.id).json()["name"] == "renamed"
    with tenant_context(org.id), django_capture_on_commit_callbacks(execute=True):
        agent_suspend(actor=TEST_ACTOR, organization_id=org.id, agent_id=agent.id)
    assert _card(agent.id).json()["capabilities"]["extensions"][0]["params"]["status"] == (
        "suspended"
    )
    assert _card(agent.id, "agntcy").json()["status"] == "suspended"
    with tenant_context(org.id), django_capture_on_commit_callbacks(execute=True):
        agent_decommission(actor=TEST_ACTOR, organization_id=org.id, agent_id=agent.id)
    assert _card(agent.id).status_code == 410


def test_a_suspended_organizations_agents_cards_say_so(
    org: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    agent = AgentFactory(organization=org)
    assert _card(agent.id, "agntcy").json()["status"] == "active"
    with platform_context(reason="tests"), django_capture_on_commit_callbacks(execute=True):
        organization_suspend(actor=TEST_ACTOR, organization_id=org.id)
    assert _card(agent.id, "agntcy").json()["status"] == "suspended"
    assert _document(agent.id).status_code == 200  # the DID still resolves


@pytest.mark.parametrize(
    "skills",
    [
        [{"id": "x"}],
        [{"id": "", "name": "n"}],
        [{"id": "a", "name": "n"}, {"id": "a", "name": "m"}],
        [{"id": "a", "name": "n", "extra": 1}],
        [{"id": "a", "name": "n\x00"}],
        [{"id": "a", "name": "n", "tags": ["t" * 51]}],
        [{"id": "a", "name": {"nested": {"deeper": 1}}}],
        "not a list",
        [{"id": "a", "name": "n"}] * 51,
    ],
)
def test_bad_skills_are_refused(
    org: Organization, client_for: Any, staff: Any, skills: Any
) -> None:
    agent = AgentFactory(organization=org)
    api: APIClient = client_for(staff)
    response = api.patch(f"/agents/{agent.id}", {"skills": skills}, format="json")
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"


def test_the_private_key_scan_catches_a_private_jwk(rf: Any) -> None:
    """The suite-wide scan (tests/private_keys.py) that every response passes through: a JWK
    with a private member is noted, a public one is not."""
    leaked = JsonResponse({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AA", "d": "AA"}]})
    public = JsonResponse({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AA"}]})
    private_keys.PrivateKeyScan(lambda request: public)(rf.get("/x"))
    assert private_keys.violations == []
    private_keys.PrivateKeyScan(lambda request: leaked)(rf.get("/x"))
    assert private_keys.violations == ["GET /x.keys[0]: a JWK with ['d']"]
    private_keys.violations.clear()


def test_platform_staff_choose_the_organizations_did_key_type(
    org: Organization, superuser: Any, client_for: Any
) -> None:
    api: APIClient = client_for(superuser)
    response = api.patch(f"/organizations/{org.id}", {"did_key_algorithm": "P-256"}, format="json")
    assert response.status_code == 200 and response.json()["did_key_algorithm"] == "P-256"
    agent = AgentFactory(organization=org)
    (method,) = _body(_document(agent.id))["verificationMethod"]
    assert method["publicKeyJwk"]["crv"] == "P-256"
    bad = api.patch(f"/organizations/{org.id}", {"did_key_algorithm": "RSA"}, format="json")
    assert bad.status_code == 400 and bad["Content-Type"] == "application/problem+json"


@pytest.mark.django_db(databases=["default", "owner"])
def test_the_data_migration_backfills_committed_agents_once(
    run_in_threads: Any,
) -> None:
    """``did.backfill`` as the migration runs it: on the owner's connection, over committed
    agents of every organization; a second run changes nothing; the audit chain still verifies."""

    def build() -> Agent:
        agent = AgentFactory(organization=OrganizationFactory())
        with tenant_context(agent.organization_id):
            Agent.objects.filter(id=agent.id).update(did="", did_created_at=None)
            AgentDidKey.objects.filter(agent_id=agent.id).delete()
        return agent

    (agent,) = run_in_threads(build)

    def backfill() -> list[str]:
        owner = connections["owner"]
        with transaction.atomic(using="owner"):
            return dids_backfill(owner)

    (first,) = run_in_threads(backfill)
    assert agent_did(agent.id) in first
    (second,) = run_in_threads(backfill)
    assert agent_did(agent.id) not in second
    with tenant_context(agent.organization_id):
        keys = list(AgentDidKey.objects.filter(agent_id=agent.id))
        refreshed = Agent.objects.get(id=agent.id)
        events = AuditEvent.objects.filter(action="did.created", subject_id=str(agent.id))
        assert [e.actor_id for e in events] == ["tests", "migration:did"]
        assert audit_chain_verify(organization_id=agent.organization_id).valid
    assert len(keys) == 1 and keys[0].custodial and refreshed.did == agent_did(agent.id)
    assert _body(_document(agent.id))["verificationMethod"][0]["id"].endswith(keys[0].kid)
