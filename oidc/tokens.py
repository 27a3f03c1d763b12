"""Access tokens as JWTs per RFC 9068: minted by DOT's generator hook, verified offline.

Verification refuses, before any signature check: ``alg`` none or outside the allowed
asymmetric set, a missing or foreign ``typ``, an unknown or malformed ``kid``, and the
``jku``/``x5u``/``jwk``/``x5c``/``crit`` headers; then checks the signature with the key the kid
names (whose algorithm must equal the header's), and ``iss``, ``aud``, ``exp``, ``nbf``.
"""

import base64
import binascii
import hashlib
import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

from cryptography.exceptions import InvalidSignature
from django.conf import settings
from jwcrypto import jwk
from jwcrypto.jwa import JWA
from oauth2_provider.oauth2_validators import is_valid_resource_uri
from oauthlib.common import Request as OAuthRequest

from agentidp.conf import agentidp_settings
from agentidp.errors import JSONValue
from agentidp.lru import BoundedLRU
from agents.models import ANY_ACTOR
from credentials.models import Client
from oidc.keys import SigningMaterial, key_ring, signing_key_current
from oidc.models import AccessToken
from oidc.status import status_claim, status_index_take

ALLOWED_ALGORITHMS = frozenset({"ES256", "RS256", "EdDSA"})
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
ID_TOKEN_TYPE = "JWT"  # noqa: S105 - a JOSE type, not a secret
FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "crit"})
# jwcrypto's JWA signature engines (RFC 7518), without its generic JWS object around them: the
# compact form is framed here, and every header is checked above before any key is touched.
_SIGNERS = {name: JWA.signing_alg(name) for name in ALLOWED_ALGORITHMS}


def api_audience() -> str:
    """The audience of tokens meant for this deployment's own API."""
    return f"{agentidp_settings().issuer}/api"


class InvalidToken(Exception):
    """A token failed verification; ``reason`` is for logs and metrics, never for callers."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# RFC 8693 token exchange: the grant and the token types it takes and issues (the federation
# grant and the delegation between local agents share them).
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URN
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URN
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105 - a URN
EXCHANGE_TOKEN_TYPES = (ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE)


@dataclass(frozen=True)
class Delegation:
    """What a validated token exchange between local agents (``oidc.delegation``) hands on to
    the token it issues: the subject agent, the ``act`` chain, the parent token."""

    subject_agent_id: uuid.UUID
    act: dict[str, JSONValue]
    parent_jti: str
    depth: int
    # The subject token's expiry (epoch seconds): the new token lives no longer.
    expires_at: int
    # The subject agent's organization: the token's ``organization_id``. Another than the
    # caller's only through a trust that allows it (``agentidp.trust``).
    organization_id: uuid.UUID


def may_act_for(actors: Sequence[str], agent_id: uuid.UUID, *, across: bool) -> bool:
    """Whether a delegation policy's ``actors`` let ``agent_id`` act: listed, or ``"*"`` (any
    agent of the policy's own organization; another organization's must be listed)."""
    return str(agent_id) in actors or (not across and ANY_ACTOR in actors)


def delegable_scopes(
    subject: Iterable[str],
    caller: Iterable[str],
    policy: Iterable[str],
    trust: Iterable[str] | None = None,
) -> set[str]:
    """What a token exchange may hand on: the subject token's scopes ∩ what the caller may hold
    ∩ what the subject's policy delegates (none listed: any) ∩ what a trust across
    organizations caps."""
    allowed = set(subject) & set(caller)
    listed = set(policy)
    if listed:
        allowed &= listed
    if trust is not None:
        allowed &= set(trust)
    return allowed


def act_claim(
    *, agent_id: uuid.UUID, client_id: str, organization_id: uuid.UUID, previous: JSONValue
) -> dict[str, JSONValue]:
    """The ``act`` claim of a token exchanged by ``agent_id`` (RFC 8693 4.1): the caller, the
    subject token's own ``act`` nested inside it."""
    act: dict[str, JSONValue] = {
        "sub": str(agent_id), "client_id": client_id, "organization_id": str(organization_id),
    }  # fmt: skip
    if isinstance(previous, dict):
        act["act"] = previous
    return act


def chain_depth(act: JSONValue) -> int:
    """How many actors an ``act`` claim names (its nesting depth; 0 for none)."""
    depth = 0
    while isinstance(act, dict):
        depth += 1
        act = act.get("act")
    return depth


def act_nested(actors: Sequence[str]) -> dict[str, JSONValue]:
    """An ``act`` claim naming ``actors`` (the latest first), each nested in the one after."""
    act: dict[str, JSONValue] = {"sub": actors[-1]}
    for actor in reversed(actors[:-1]):
        act = {"sub": actor, "act": act}
    return act


def chain_members(act: JSONValue, organization_id: uuid.UUID) -> list[tuple[str, str]]:
    """The actors' agent ids with their organizations (``organization_id`` for an actor that
    names none), outermost first."""
    members: list[tuple[str, str]] = []
    while isinstance(act, dict):
        members.append((str(act.get("sub", "")), str(act.get("organization_id", organization_id))))
        act = act.get("act")
    return members


def chain_actors(act: JSONValue) -> list[str]:
    """The actors' agent ids, outermost (the latest) first."""
    actors: list[str] = []
    while isinstance(act, dict):
        actors.append(str(act.get("sub", "")))
        act = act.get("act")
    return actors


@dataclass(frozen=True)
class Target:
    """A registered resource a token request names (``resource``/``audience``, RFC 8707), with
    what the requesting agent may be issued for it (:mod:`oidc.resources`)."""

    identifier: str
    resource_id: uuid.UUID
    scopes: frozenset[str]
    granted: frozenset[str]
    lifetime: int | None
    signing_algorithm: str
    dpop_required: bool


@dataclass
class Issuance:
    """What one token request carries between DOT's hooks (validator, generator, save) and the
    view: it travels on the request itself (:data:`ISSUANCE_KEY` in ``request.META``, which DOT
    copies into the headers of the oauthlib request the hooks receive)."""

    audiences: list[str] = field(default_factory=list)
    credential_id: uuid.UUID | None = None
    claims: dict[str, JSONValue] = field(default_factory=dict)
    # The row this request wrote (sent with DOT's app_authorized signal).
    issued: AccessToken | None = None
    # The usage counter admission reserved a token on; given back unless one is issued.
    reserved: str = ""
    # Seconds a 429 or 503 tells the client to wait.
    retry_after: int | None = None
    # The client's address (agentidp.addresses), which failed authentications are throttled by.
    source_address: str = ""
    # Set by a token exchange between local agents: the token is issued for its subject.
    delegation: Delegation | None = None
    # The token's index in the status lists (oidc.status), once it is signed.
    status_idx: int | None = None
    # The registered resource the token is for (None: the platform API), once resolved.
    target: Target | None = None
    target_resolved: bool = False
    # DPoP (oidc.dpop): the request's proof and the URLs it may name; once it checked out, the
    # thumbprint of its key, which the token is bound to (cnf.jkt).
    dpop_proof: str | None = None
    dpop_urls: list[str] = field(default_factory=list)
    dpop_jkt: str | None = None
    # A DPoP refusal was answered: the answer carries a nonce to retry with.
    dpop_refused: bool = False


# A WSGI-style environ key (dotted, so no HTTP header can produce it).
ISSUANCE_KEY = "agentidp.issuance"
_ATTRIBUTE = "agentidp_issuance"


def issuance(request: OAuthRequest) -> Issuance:
    """The state of the token request ``request`` belongs to (a new one if the view set none)."""
    state = getattr(request, _ATTRIBUTE, None)
    if not isinstance(state, Issuance):
        headers = cast(Mapping[str, object], request.headers or {})
        carried = headers.get(ISSUANCE_KEY)
        state = issuance_attach(request, carried if isinstance(carried, Issuance) else Issuance())
    return state


def issuance_attach(request: OAuthRequest, state: Issuance) -> Issuance:
    """Carry ``state`` on an oauthlib request built by our own view (introspection)."""
    setattr(request, _ATTRIBUTE, state)
    return state


def lifetime_capped(seconds: int) -> int:
    """An organization's token lifetime, capped by ``AGENTIDP_ACCESS_TOKEN_MAX_LIFETIME``."""
    return min(int(seconds), int(settings.AGENTIDP["ACCESS_TOKEN_MAX_LIFETIME"]))


def requested_audiences(request: OAuthRequest) -> list[str]:
    """``resource`` (RFC 8707, repeatable) or ``audience`` parameters; absolute URIs only."""
    values: list[str] = []
    for key, value in getattr(request, "decoded_body", None) or []:
        if key in {"resource", "audience"}:
            values.append(str(value))
    for value in values:
        if not is_valid_resource_uri(value):
            raise ValueError(value)
    return sorted(set(values))


def access_token_claims(
    *,
    agent_id: uuid.UUID,
    client_id: str,
    organization_id: uuid.UUID,
    scope: str,
    audiences: list[str],
    lifetime: int,
    status_idx: int,
    actors: Sequence[str] = (ANY_ACTOR,),
) -> dict[str, JSONValue]:
    """The RFC 9068 claims of a new access token (a fresh ``jti``), with its place in the
    token status lists (``status``, :mod:`oidc.status`), and ``may_act`` when ``actors``
    (who may act for the token's agent) is not everyone."""
    now = int(time.time())
    audiences = audiences or [api_audience()]
    claims: dict[str, JSONValue] = {
        "iss": agentidp_settings().issuer,
        "sub": str(agent_id),
        "aud": audiences[0] if len(audiences) == 1 else list(audiences),
        "exp": now + lifetime,
        "iat": now,
        "nbf": now,
        "jti": str(uuid.uuid4()),
        "client_id": client_id,
        "scope": scope,
        "organization_id": str(organization_id),
        "status": status_claim(status_idx),
    }
    allowed = may_act(actors)
    if allowed is not None:
        claims["may_act"] = allowed
    return claims


def may_act(actors: Sequence[str]) -> JSONValue | None:
    """The ``may_act`` claim (RFC 8693 4.4) of a token whose agent restricts who may act for it:
    the one agent that may, as the RFC's object; several as an array of such objects (none
    listed: an empty array, nobody may). ``None`` when any agent of the organization may."""
    if ANY_ACTOR in actors:
        return None
    parties: list[JSONValue] = [{"sub": str(actor)} for actor in actors]
    return parties[0] if len(parties) == 1 else parties


def jws_signature(signing: SigningMaterial, signing_input: bytes) -> bytes:
    """The raw JWS signature of ``signing_input`` under ``signing`` (its algorithm's JWA)."""
    signature: bytes = _SIGNERS[signing.algorithm].sign(signing.key, signing_input)
    return signature


def jws_sign(claims: Mapping[str, JSONValue], signing: SigningMaterial, *, typ: str) -> str:
    """The compact JWS of ``claims`` under ``signing``, its header naming ``typ`` and the kid."""
    header = {"alg": signing.algorithm, "typ": typ, "kid": signing.kid}
    signing_input = f"{_b64_encode_json(header)}.{_b64_encode_json(claims)}"
    signature = jws_signature(signing, signing_input.encode())
    return f"{signing_input}.{_b64_encode(signature)}"


def access_token_sign(claims: Mapping[str, JSONValue], signing: SigningMaterial) -> str:
    """The compact JWS of an access token's claims (``typ: at+jwt``, RFC 9068)."""
    return jws_sign(claims, signing, typ="at+jwt")


# at_hash (OIDC Core 3.1.3.6): the left half of the access token's hash under the hash of the
# id_token's algorithm. Ed25519's is ambiguous across libraries (OIDC says SHA-512, several
# relying-party libraries know none), and at_hash is optional here, so EdDSA id_tokens omit it.
_AT_HASH = {"ES256": hashlib.sha256, "RS256": hashlib.sha256}


def id_token_claims(
    *,
    access_claims: Mapping[str, JSONValue],
    access_token: str,
    algorithm: str,
    agent_name: str,
    agent_status: str,
    capabilities: Sequence[str],
    did: str,
) -> dict[str, JSONValue]:
    """An id_token issued beside an access token: the same ``sub``, ``iat`` and ``exp``; its
    audience and authorized party the client; the agent's claims (OIDC Core 2)."""
    client_id = access_claims["client_id"]
    claims: dict[str, JSONValue] = {
        "iss": access_claims["iss"],
        "sub": access_claims["sub"],
        "aud": client_id,
        "azp": client_id,
        "exp": access_claims["exp"],
        "iat": access_claims["iat"],
        "auth_time": access_claims["iat"],
        "jti": str(uuid.uuid4()),
        "organization_id": access_claims["organization_id"],
        "agent_name": agent_name,
        "agent_status": agent_status,
        "capabilities": list(capabilities),
    }
    if did:
        claims["did"] = did
    hasher = _AT_HASH.get(algorithm)
    if hasher is not None:
        digest = hasher(access_token.encode("ascii")).digest()
        claims["at_hash"] = _b64_encode(digest[: len(digest) // 2])
    return claims


def id_token_sign(claims: Mapping[str, JSONValue], signing: SigningMaterial) -> str:
    """The compact JWS of an id_token (``typ: JWT``): never accepted as an access token."""
    return jws_sign(claims, signing, typ=ID_TOKEN_TYPE)


def access_token_generate(request: OAuthRequest) -> str:
    """DOT's ``ACCESS_TOKEN_GENERATOR``: sign the RFC 9068 claims for ``request.client``."""
    client = cast(Client, request.client)
    state = issuance(request)
    delegation = state.delegation
    state.status_idx = status_index_take()
    record = getattr(client, "record", None)  # a delegated token's subject is not the client
    actors = record.delegation_actors if record is not None and delegation is None else (ANY_ACTOR,)
    state.claims = access_token_claims(
        agent_id=delegation.subject_agent_id if delegation else client.agent_id,
        client_id=client.client_id,
        organization_id=delegation.organization_id if delegation else client.organization_id,
        scope=" ".join(request.scopes or []),
        audiences=state.audiences,
        lifetime=int(request.expires_in or 0),
        status_idx=state.status_idx,
        actors=actors,
    )
    if delegation is not None:
        # RFC 8693 4.1: who acts for the subject, the earlier actors nested inside
        state.claims["act"] = delegation.act
    if state.dpop_jkt is not None:
        state.claims["cnf"] = {"jkt": state.dpop_jkt}  # RFC 9449 6.1
    algorithm = state.target.signing_algorithm if state.target is not None else None
    return access_token_sign(state.claims, signing_key_current(algorithm))


def _b64_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64_encode_json(value: Mapping[str, JSONValue]) -> str:
    return _b64_encode(json.dumps(value, separators=(",", ":")).encode())


def b64url_decode(segment: str) -> bytes:
    """Strict base64url: one encoding per value, so a re-encoded signature is no token."""
    try:
        decoded = base64.b64decode(segment + "=" * (-len(segment) % 4), b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidToken("malformed") from exc
    if _b64_encode(decoded) != segment:
        raise InvalidToken("malformed")
    return decoded


def b64url_json(segment: str) -> dict[str, JSONValue]:
    try:
        padded = segment + "=" * (-len(segment) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidToken("malformed") from exc
    if not isinstance(value, dict):
        raise InvalidToken("malformed")
    return value


@dataclass(frozen=True)
class VerifiedToken:
    """The claims of a token whose signature, type, issuer, audience and times checked out."""

    claims: Mapping[str, JSONValue]

    @property
    def jti(self) -> str:
        return str(self.claims["jti"])

    @property
    def subject(self) -> str:
        return str(self.claims["sub"])

    @property
    def organization_id(self) -> uuid.UUID:
        return uuid.UUID(str(self.claims["organization_id"]))

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset(str(self.claims.get("scope", "")).split())

    @property
    def expires_at(self) -> int:
        return int(str(self.claims["exp"]))

    @property
    def issued_at(self) -> int:
        return int(str(self.claims["iat"]))


def access_token_verify(
    token: str,
    *,
    audience: str | None = None,
    check_times: bool = True,
    any_audience: bool = False,
) -> VerifiedToken:
    """Verify an access token offline; raise :class:`InvalidToken` naming the reason.

    A token whose header and signature checked out is remembered (:data:`verified_tokens`), so
    an agent presenting the same token again costs no signature check; its key must still be
    published, and its claims (issuer, audience, times) are checked on every use."""
    remembered = verified_tokens.get(token)
    if remembered is not None and key_ring.verification_key(remembered[0]) is not None:
        claims = remembered[1]
    else:
        kid, claims = _signature_verify(token, ACCESS_TOKEN_TYPES)
        verified_tokens.put(token, (kid, claims))
    _check_claims(
        claims,
        audience=None if any_audience else (audience or api_audience()),
        check_times=check_times,
    )
    return VerifiedToken(claims=claims)


def _header_checked(token: str, types: frozenset[str]) -> tuple[list[str], dict[str, JSONValue]]:
    """The compact JWS's three parts and its header, refused unless the algorithm is one of
    ours, no forbidden header is present and ``typ`` is one of ``types``."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise InvalidToken("malformed")
    header = b64url_json(parts[0])
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in ALLOWED_ALGORITHMS:
        raise InvalidToken("algorithm")
    if FORBIDDEN_HEADERS.intersection(header):
        raise InvalidToken("header")
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in types:
        raise InvalidToken("type")
    return parts, header


def _signature_check(parts: Sequence[str], algorithm: str, key: jwk.JWK) -> None:
    signature = b64url_decode(parts[2])
    try:
        _SIGNERS[algorithm].verify(key, f"{parts[0]}.{parts[1]}".encode(), signature)
    except (InvalidSignature, ValueError, TypeError, AttributeError) as exc:
        raise InvalidToken("signature") from exc


def _signature_verify(token: str, types: frozenset[str]) -> tuple[str, dict[str, JSONValue]]:
    """The kid and claims of a token whose header (of one of ``types``) and signature are
    right."""
    parts, header = _header_checked(token, types)
    kid = header.get("kid")
    found = key_ring.verification_key(kid) if isinstance(kid, str) else None
    if found is None:
        raise InvalidToken("kid")
    key_algorithm, key = found
    if key_algorithm != header["alg"]:
        raise InvalidToken("algorithm")
    _signature_check(parts, key_algorithm, key)
    return str(kid), b64url_json(parts[1])


def jws_verify(
    token: str, public_jwk: Mapping[str, JSONValue], *, typ: str, kid: str
) -> dict[str, JSONValue]:
    """The claims of a compact JWS of type ``typ`` whose header names ``kid`` and which
    ``public_jwk`` verifies (a key that may have left the JWKS: a checkpoint's, say), under the
    same header rules as access tokens; raise :class:`InvalidToken`."""
    parts, header = _header_checked(token, frozenset({typ.lower()}))
    try:
        key = jwk.JWK(**public_jwk)
    except (jwk.InvalidJWKValue, ValueError, TypeError) as exc:
        raise InvalidToken("key") from exc
    if key.has_private or header.get("kid") != kid:
        raise InvalidToken("key")
    _signature_check(parts, str(header["alg"]), key)
    return b64url_json(parts[1])


def id_token_verify(token: str, *, client_id: str) -> dict[str, JSONValue]:
    """Verify an id_token issued to ``client_id`` (where one is expected, e.g. as a hint);
    raise :class:`InvalidToken`. An access token (``typ: at+jwt``) is refused by its type
    before anything else; the claims are OIDC Core 3.1.3.7's: issuer, audience, authorized
    party, times. Never cached: :data:`verified_tokens` holds access tokens only."""
    _, claims = _signature_verify(token, frozenset({ID_TOKEN_TYPE.lower()}))
    _check_issued(claims, ID_TOKEN_CLAIMS_REQUIRED, audience=client_id)
    if claims.get("azp", client_id) != client_id:
        raise InvalidToken("audience")
    _check_times(claims)
    return claims


# Tokens whose header and signature verified: token -> (kid, claims). Only tokens that passed
# every check enter it, so forged or garbled tokens cannot push real ones out.
verified_tokens: BoundedLRU[str, tuple[str, dict[str, JSONValue]]] = BoundedLRU(max_entries=4096)


ACCESS_TOKEN_CLAIMS_REQUIRED = (
    "iss", "sub", "aud", "exp", "iat", "jti", "client_id", "organization_id"
)  # fmt: skip
ID_TOKEN_CLAIMS_REQUIRED = ("iss", "sub", "aud", "exp", "iat", "auth_time")


def _check_issued(
    claims: Mapping[str, JSONValue], required: Sequence[str], *, audience: str | None
) -> None:
    """The claims are all there, issued by this deployment, for ``audience`` (if given)."""
    if any(name not in claims for name in required):
        raise InvalidToken("claims")
    if claims["iss"] != agentidp_settings().issuer:
        raise InvalidToken("issuer")
    audiences = claims["aud"]
    listed: Sequence[JSONValue] = audiences if isinstance(audiences, list) else [audiences]
    if audience is not None and audience not in listed:
        raise InvalidToken("audience")


def _check_claims(
    claims: Mapping[str, JSONValue], *, audience: str | None, check_times: bool
) -> None:
    _check_issued(claims, ACCESS_TOKEN_CLAIMS_REQUIRED, audience=audience)
    if check_times:
        _check_times(claims)


def token_leeway() -> int:
    return min(int(settings.AGENTIDP["TOKEN_LEEWAY_SECONDS"]), 60)


def _seconds(value: JSONValue) -> int:
    """A NumericDate as we issue them: an integer (never a float, a bool or 1e308)."""
    if type(value) is not int:
        raise InvalidToken("claims")
    return value


def _check_times(claims: Mapping[str, JSONValue]) -> None:
    """``exp`` not past, ``nbf`` and ``iat`` not ahead (with leeway), and a lifetime no longer
    than any token of this deployment may have: a token signed with the real key but an ``exp``
    years ahead (or an ``iat`` to come) was never issued here."""
    leeway = token_leeway()
    now = time.time()
    exp, iat = _seconds(claims["exp"]), _seconds(claims["iat"])
    nbf = _seconds(claims["nbf"]) if "nbf" in claims else iat
    if exp + leeway <= now:
        raise InvalidToken("expired")
    if nbf - leeway > now or iat - leeway > now:
        raise InvalidToken("not_yet_valid")
    if exp - iat > int(settings.AGENTIDP["ACCESS_TOKEN_MAX_LIFETIME"]) + leeway:
        raise InvalidToken("lifetime")
