"""DID documents (W3C DID Core 1.0) and DID resolution results, built from public data only."""

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping

from django.conf import settings

from agentidp.conf import agentidp_settings
from agentidp.errors import JSONValue
from agents.choices import AgentStatus
from did.choices import DidKeyStatus
from did.models import AgentDidKey
from did.selectors import PublicAgent
from did.web import instance_did

CONTEXT: list[JSONValue] = [
    "https://www.w3.org/ns/did/v1",
    "https://w3id.org/security/suites/jws-2020/v1",
]
# The members a public JWK may carry: anything else (a private "d", "p", "q", ...) never leaves.
PUBLIC_JWK_MEMBERS = frozenset({"kty", "crv", "x", "y", "n", "e", "kid", "alg", "use"})


def public_jwk(jwk: Mapping[str, JSONValue]) -> dict[str, JSONValue]:
    return {name: value for name, value in jwk.items() if name in PUBLIC_JWK_MEMBERS}


def verification_method(did: str, kid: str, jwk: Mapping[str, JSONValue]) -> dict[str, JSONValue]:
    return {
        "id": f"{did}#{kid}",
        "type": "JsonWebKey2020",
        "controller": did,
        "publicKeyJwk": public_jwk(jwk),
    }


def listed_keys(keys: Iterable[AgentDidKey], now: dt.datetime) -> list[AgentDidKey]:
    """Active keys, and retired ones still inside ``DID_KEY_RETIRED_SECONDS``."""
    keep = dt.timedelta(seconds=int(settings.AGENTIDP["DID_KEY_RETIRED_SECONDS"]))
    return [
        key
        for key in keys
        if key.status == DidKeyStatus.ACTIVE
        or (key.retired_at is not None and key.retired_at + keep > now)
    ]


def agent_document(public: PublicAgent, now: dt.datetime) -> dict[str, JSONValue]:
    """The agent's DID document: its keys, who controls it, and where its card and the token
    endpoint are."""
    agent = public.agent
    did = agent.did
    issuer = agentidp_settings().issuer
    listed = listed_keys(public.keys, now)
    active: list[JSONValue] = [
        f"{did}#{key.kid}" for key in listed if key.status == DidKeyStatus.ACTIVE
    ]
    return {
        "@context": list(CONTEXT),
        "id": did,
        "controller": instance_did(),
        "verificationMethod": [verification_method(did, k.kid, k.public_jwk) for k in listed],
        "authentication": list(active),
        "assertionMethod": list(active),
        "service": [
            {
                "id": f"{did}#agent-card",
                "type": "AgentCard",
                "serviceEndpoint": f"{issuer}/agents/{agent.id}/did/card",
            },
            {
                "id": f"{did}#oauth2",
                "type": "OAuth2TokenEndpoint",
                "serviceEndpoint": f"{issuer}/oauth2/token",
            },
        ],
    }


def instance_document(published: Iterable[Mapping[str, JSONValue]]) -> dict[str, JSONValue]:
    """This deployment's DID document: the keys of its JWKS (which sign its tokens and its
    agent cards) as verification methods."""
    did = instance_did()
    methods = [verification_method(did, str(jwk["kid"]), jwk) for jwk in published]
    ids: list[JSONValue] = [str(method["id"]) for method in methods]
    return {
        "@context": list(CONTEXT),
        "id": did,
        "verificationMethod": list(methods),
        "assertionMethod": list(ids),
        "service": [
            {
                "id": f"{did}#oidc",
                "type": "OpenIdConnectVersion1.0Service",
                "serviceEndpoint": agentidp_settings().issuer,
            }
        ],
    }


def last_changed(public: PublicAgent) -> dt.datetime:
    moments = [public.agent.updated_at]
    for key in public.keys:
        moments.append(key.created_at)
        if key.retired_at is not None:
            moments.append(key.retired_at)
    return max(moments)


def document_metadata(
    public: PublicAgent, document: Mapping[str, JSONValue]
) -> dict[str, JSONValue]:
    """DID Core 7.1.3 metadata: created, updated, deactivated, versionId (the document's
    content hash, so any change is a new version)."""
    agent = public.agent
    created = agent.did_created_at or agent.created_at
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return {
        "created": _iso(created),
        "updated": _iso(last_changed(public)),
        "deactivated": agent.status == AgentStatus.DECOMMISSIONED,
        "versionId": hashlib.sha256(canonical).hexdigest()[:32],
    }


RESOLUTION_CONTEXT = "https://w3id.org/did-resolution/v1"


def resolution_result(
    public: PublicAgent, now: dt.datetime, *, content_type: str
) -> dict[str, JSONValue]:
    """A DID Resolution result (W3C DID Resolution): the document and both metadata."""
    document = agent_document(public, now)
    return {
        "@context": RESOLUTION_CONTEXT,
        "didResolutionMetadata": {"contentType": content_type},
        "didDocument": document,
        "didDocumentMetadata": document_metadata(public, document),
    }


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
