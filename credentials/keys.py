"""Agents' public keys for ``private_key_jwt`` (RFC 7523 2.2): an agent signs a short-lived
assertion with its private key, which never reaches this deployment, instead of sending a
secret. A key is a public JWK kept here, or a JWKS URI fetched through the outbound guard
(cached in Redis; a ``kid`` it lacks refetches it at most once per interval).
"""

import base64
import binascii
import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from jwcrypto import jwk
from redis import RedisError

from agentidp.boundary import text_refusal
from agentidp.errors import Conflict, JSONValue, NotFound, ValidationFailed
from agentidp.events import event_record
from agentidp.lifecycle import CredentialRevocation, credentials_revoked
from agentidp.outbound import UrlRefused, document_limits, outbound_request, url_check
from agentidp.principals import Principal
from agentidp.usage import redis_client
from agents.services import agent_get
from credentials.models import AgentKey
from credentials.services import client_get_or_create

logger = logging.getLogger("agentidp.auth")

MAX_KEYS = 2
MAX_JWK_BYTES = 8192
# The JWS algorithms an assertion may use, and the key each needs.
ALGORITHMS: dict[str, tuple[str, str | None]] = {
    "ES256": ("EC", "P-256"),
    "EdDSA": ("OKP", "Ed25519"),
    "PS256": ("RSA", None),
    "RS256": ("RSA", None),
}
JWKS_CACHE_SECONDS = 300
JWKS_REFETCH_SECONDS = 30
ADDED_EVENT = "credential.key_added"
REMOVED_EVENT = "credential.key_removed"


def _refused(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, errors={field: [message]})


def key_algorithms(public: Mapping[str, JSONValue]) -> list[str]:
    """The assertion algorithms ``public`` (a checked JWK) verifies: its ``alg`` alone when it
    names one, else every algorithm its key type allows."""
    named = public.get("alg")
    if isinstance(named, str):
        return [named]
    return [
        algorithm
        for algorithm, (kty, crv) in ALGORITHMS.items()
        if public.get("kty") == kty and (crv is None or public.get("crv") == crv)
    ]


def public_jwk_checked(value: object, field: str = "jwk") -> dict[str, JSONValue]:
    """A public signing JWK of an allowed type (EC P-256, Ed25519, RSA of 2048 bits or more),
    without any private part, its ``kid`` set (RFC 7638 thumbprint when it had none)."""
    if not isinstance(value, Mapping):
        raise _refused(field, "A JSON Web Key object (RFC 7517).")
    try:
        if len(json.dumps(value)) > MAX_JWK_BYTES:
            raise _refused(field, f"At most {MAX_JWK_BYTES} bytes.")
        key = jwk.JWK(**value)
    except (jwk.InvalidJWKValue, jwk.InvalidJWKType, ValueError, TypeError, KeyError) as exc:
        raise _refused(field, "Not a valid JSON Web Key.") from exc
    if key.has_private or any(p in value for p in ("d", "p", "q", "dp", "dq", "qi", "k")):
        raise _refused(field, "A private key: register the public key only.")
    public: dict[str, JSONValue] = dict(key.export_public(as_dict=True))
    kty, crv = public.get("kty"), public.get("crv")
    if not any(kty == t and (c is None or crv == c) for t, c in ALGORITHMS.values()):
        raise _refused(field, "The key must be EC P-256, Ed25519 (OKP) or RSA.")
    if kty == "RSA":
        modulus = base64url_length(str(public.get("n", "")))
        if modulus < 2048:
            raise _refused(field, "An RSA key must have at least 2048 bits.")
    use = value.get("use")
    if use is not None and use != "sig":
        raise _refused(field, 'The key\'s "use" must be "sig".')
    algorithm = value.get("alg")
    if algorithm is not None:
        if algorithm not in ALGORITHMS or algorithm not in key_algorithms({**public, "alg": None}):
            raise _refused(field, f"alg must suit the key: one of {', '.join(ALGORITHMS)}.")
        public["alg"] = str(algorithm)
    kid = value.get("kid")
    if kid is None:
        kid = key.thumbprint()
    if not isinstance(kid, str) or not kid or len(kid) > 200 or text_refusal(kid) or "/" in kid:
        raise _refused(field, "kid must be a string of 1 to 200 characters without a slash.")
    public["kid"] = kid
    if use is not None:
        public["use"] = "sig"
    return public


def base64url_length(value: str) -> int:
    """The bit length of a base64url-encoded big-endian integer (an RSA modulus)."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return 0
    return int.from_bytes(raw, "big").bit_length()


class KeysUnavailable(Exception):
    """A JWKS URI could not be fetched or held no usable key; ``reason`` is for logs."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def jwks_fetch(uri: str) -> list[dict[str, JSONValue]]:
    """The usable public signing keys at ``uri`` (the outbound guard's rules, no redirects)."""
    response = outbound_request(
        "GET", uri, headers={"Accept": "application/json"}, limits=document_limits()
    )
    if response.error or response.status != 200:
        raise KeysUnavailable(response.error or f"status_{response.status}")
    try:
        document = json.loads(response.body)
    except ValueError as exc:
        raise KeysUnavailable("not_json") from exc
    listed = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(listed, list):
        raise KeysUnavailable("not_jwks")
    usable: list[dict[str, JSONValue]] = []
    for item in listed:
        try:
            usable.append(public_jwk_checked(item))
        except ValidationFailed:
            continue  # an encryption key, a private one, another type: not for assertions
    if not usable:
        raise KeysUnavailable("no_usable_key")
    return usable


def _cache_key(key_id: uuid.UUID) -> str:
    return f"agentidp:agentjwks:{key_id}"


def jwks_keys(key: AgentKey, *, kid: str | None) -> list[dict[str, JSONValue]]:
    """The keys of a JWKS URI entry, cached; a ``kid`` the cached set lacks refetches it at most
    once per :data:`JWKS_REFETCH_SECONDS`. Raises :class:`KeysUnavailable`."""
    client = redis_client()
    cache = _cache_key(key.id)
    try:
        cached = client.get(cache)
    except RedisError:
        cached = None
    if isinstance(cached, bytes):
        keys: list[dict[str, JSONValue]] = json.loads(cached)
        if kid is None or any(k.get("kid") == kid for k in keys):
            return keys
        try:
            if not client.set(f"{cache}:refetch", "1", nx=True, ex=JWKS_REFETCH_SECONDS):
                return keys
        except RedisError:
            return keys
    keys = jwks_fetch(key.jwks_uri)
    try:
        client.set(cache, json.dumps(keys), ex=JWKS_CACHE_SECONDS)
    except RedisError:
        logger.warning("could not cache an agent's JWKS")
    return keys


def _uri_checked(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 2048 or text_refusal(value):
        raise _refused("jwks_uri", "An https URL of at most 2048 characters.")
    try:
        url_check(value)
    except UrlRefused as refused:
        raise _refused("jwks_uri", refused.message) from refused
    return value


def key_list(*, organization_id: uuid.UUID, agent_id: uuid.UUID) -> QuerySet[AgentKey]:
    agent_get(organization_id=organization_id, agent_id=agent_id)
    return AgentKey.objects.filter(organization_id=organization_id, agent_id=agent_id)


@dataclass(frozen=True)
class HeldKey:
    """A public key an agent holds the private part of, kept by another app (its DID's
    verification method): it authenticates like a registered key. ``id`` is what tokens
    issued on it record, so revoking it revokes them."""

    id: uuid.UUID
    kid: str
    public_jwk: Mapping[str, JSONValue]
    aliases: tuple[str, ...] = ()  # other kids an assertion may name it by (the DID URL)


HeldKeys = Callable[[uuid.UUID, uuid.UUID], list[HeldKey]]
_held_key_sources: list[HeldKeys] = []


def held_keys_from(source: HeldKeys) -> None:
    """Register where else an agent's keys live (``did`` registers its DID keys at start)."""
    if source not in _held_key_sources:
        _held_key_sources.append(source)


def held_keys(*, organization_id: uuid.UUID, agent_id: uuid.UUID) -> list[HeldKey]:
    """The agent's keys kept elsewhere, for client authentication (the organization entered)."""
    return [key for source in _held_key_sources for key in source(organization_id, agent_id)]


def agent_keys(*, organization_id: uuid.UUID, agent_id: uuid.UUID) -> list[AgentKey]:
    """An agent's keys, for client authentication (the organization already entered)."""
    return list(AgentKey.objects.filter(organization_id=organization_id, agent_id=agent_id))


def _data(key: AgentKey) -> dict[str, JSONValue]:
    return {"kid": key.kid, "agent_id": str(key.agent_id), "jwks_uri": key.jwks_uri or None,
            "algorithm": key.algorithm or None}  # fmt: skip


@transaction.atomic
def key_add(
    *,
    actor: Principal,
    organization_id: uuid.UUID,
    agent_id: uuid.UUID,
    jwk_value: object = None,
    jwks_uri: object = None,
) -> AgentKey:
    """Register a public key (``jwk_value``) or a JWKS URI (fetched now: it must hold a usable
    key) for the agent; at most :data:`MAX_KEYS` at a time."""
    if (jwk_value is None) == (jwks_uri is None):
        raise ValidationFailed(
            "Send either jwk or jwks_uri.", errors={"jwk": ["Either jwk or jwks_uri."]}
        )
    agent = agent_get(organization_id=organization_id, agent_id=agent_id, for_update=True)
    if AgentKey.objects.filter(organization_id=organization_id, agent_id=agent.id).count() >= (
        MAX_KEYS
    ):
        raise Conflict(
            f"The agent has {MAX_KEYS} keys; delete one first.",
            errors={"jwk": [f"At most {MAX_KEYS} keys per agent (one replacing the other)."]},
        )
    client_get_or_create(organization_id=organization_id, agent=agent)  # what authenticates
    key = AgentKey(organization_id=organization_id, agent_id=agent.id, created_by=actor.id[:200])
    if jwk_value is not None:
        public = public_jwk_checked(jwk_value)
        key.public_jwk, key.kid = public, str(public["kid"])
        key.algorithm = str(public.get("alg") or "")
    else:
        key.jwks_uri = _uri_checked(jwks_uri)
        try:
            jwks_fetch(key.jwks_uri)
        except KeysUnavailable as unavailable:
            raise _refused(
                "jwks_uri", f"The JWKS could not be used ({unavailable.reason})."
            ) from unavailable
        key.kid = "jwks-" + hashlib.sha256(key.jwks_uri.encode()).hexdigest()[:16]
    try:
        with transaction.atomic():
            key.save(force_insert=True)
    except IntegrityError as exc:
        raise Conflict(
            "The agent has a key with this kid already.", errors={"jwk": ["kid taken."]}
        ) from exc
    event_record(
        organization_id=organization_id, actor=actor, action=ADDED_EVENT,
        subject_type="agent", subject_id=str(agent.id), data=_data(key),
    )  # fmt: skip
    return key


@transaction.atomic
def key_delete(
    *, actor: Principal, organization_id: uuid.UUID, agent_id: uuid.UUID, kid: str
) -> None:
    """Remove a key: assertions it signs are refused from now on, and tokens issued on its
    assertions are revoked with it."""
    agent_get(organization_id=organization_id, agent_id=agent_id)
    key = (
        AgentKey.objects.select_for_update()
        .filter(organization_id=organization_id, agent_id=agent_id, kid=kid)
        .first()
    )
    if key is None:
        raise NotFound("No such key.")
    key_id = key.id  # delete() forgets it
    key.delete()
    credentials_revoked(
        CredentialRevocation(organization_id=organization_id, credential_ids=(key_id,), actor=actor)
    )
    event_record(
        organization_id=organization_id, actor=actor, action=REMOVED_EVENT,
        subject_type="agent", subject_id=str(agent_id), data=_data(key),
    )  # fmt: skip
