"""``private_key_jwt`` client authentication (RFC 7523 2.2, OIDC Core 9): the client proves
itself with a JWT it signed with a key it registered (``credentials.keys``) or with the active
key of its DID that it holds itself (a non-custodial verification method, ``did``).

Checked before the client is trusted with anything: the algorithm (ES256, EdDSA, PS256,
RS256; no key or key URL in the header), ``iss`` = ``sub`` = the client_id, ``aud`` the
issuer identifier (the token endpoint's URL only where the organization allows it), ``exp``
at most five minutes ahead and not past, ``iat``/``nbf`` not ahead, the signature, and the
``jti`` single use until the assertion expires (durable: :mod:`oidc.replay`).
"""

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from jwcrypto import jwk
from jwcrypto.jwa import JWA

from agentidp.conf import agentidp_settings
from agentidp.errors import JSONValue
from credentials.keys import (
    ALGORITHMS,
    HeldKey,
    KeysUnavailable,
    agent_keys,
    held_keys,
    jwks_keys,
    key_algorithms,
)
from credentials.models import AgentKey
from oidc.replay import assertion_spend
from oidc.tokens import FORBIDDEN_HEADERS, InvalidToken, b64url_decode, b64url_json, token_leeway
from organizations.models import Organization

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_AHEAD_SECONDS = 300
MAX_ASSERTION_BYTES = 16384
_VERIFIERS = {name: JWA.signing_alg(name) for name in ALGORITHMS}


class AssertionRefused(Exception):
    """Why a client assertion was refused; ``reason`` is audited, never shown in detail."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ClientAssertion:
    """A client assertion split and decoded, not yet verified."""

    client_id: str
    parts: tuple[str, str, str]
    header: Mapping[str, JSONValue]
    claims: Mapping[str, JSONValue]


def client_assertion_parse(assertion: str) -> ClientAssertion:
    """The assertion's header and claims, refused unless its shape, algorithm and headers are
    acceptable and ``iss`` and ``sub`` name one client."""
    if not assertion or len(assertion) > MAX_ASSERTION_BYTES:
        raise AssertionRefused("malformed")
    parts = assertion.split(".")
    if len(parts) != 3 or not all(parts):
        raise AssertionRefused("malformed")
    try:
        header, claims = b64url_json(parts[0]), b64url_json(parts[1])
    except InvalidToken as exc:
        raise AssertionRefused("malformed") from exc
    if header.get("alg") not in ALGORITHMS:
        raise AssertionRefused("algorithm")
    if FORBIDDEN_HEADERS.intersection(header):
        raise AssertionRefused("header")
    issuer, subject = claims.get("iss"), claims.get("sub")
    if not isinstance(issuer, str) or not issuer or len(issuer) > 200 or issuer != subject:
        raise AssertionRefused("iss_sub")
    return ClientAssertion(
        client_id=issuer, parts=(parts[0], parts[1], parts[2]), header=header, claims=claims
    )


def _audience_ok(claims: Mapping[str, JSONValue], organization_id: uuid.UUID) -> bool:
    audience = claims.get("aud")
    listed: Sequence[JSONValue] = audience if isinstance(audience, list) else [audience]
    issuer = agentidp_settings().issuer
    if issuer in listed:
        return True
    if f"{issuer}/oauth2/token" not in listed:
        return False
    return bool(
        Organization.objects.filter(id=organization_id)
        .values_list("assertion_audience_token_endpoint", flat=True)
        .first()
    )


def _times_checked(claims: Mapping[str, JSONValue]) -> int:
    now = int(time.time())
    leeway = token_leeway()
    expires = claims.get("exp")
    if isinstance(expires, bool) or not isinstance(expires, int):
        raise AssertionRefused("exp")
    if expires <= now - leeway:
        raise AssertionRefused("expired")
    if expires > now + MAX_AHEAD_SECONDS + leeway:
        raise AssertionRefused("exp_too_far")
    for name in ("iat", "nbf"):
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value > now + leeway:
            raise AssertionRefused(name)
    return expires


def _candidates(assertion: ClientAssertion, keys: Sequence[AgentKey]) -> list[dict[str, JSONValue]]:
    kid = assertion.header.get("kid")
    wanted = kid if isinstance(kid, str) else None
    found: list[dict[str, JSONValue]] = []
    for key in keys:
        if key.public_jwk is not None:
            if wanted is None or key.kid == wanted:
                found.append(dict(key.public_jwk))
            continue
        try:
            listed = jwks_keys(key, kid=wanted)
        except KeysUnavailable:
            continue
        found += [k for k in listed if wanted is None or k.get("kid") == wanted]
    return found


def _held_candidates(assertion: ClientAssertion, held: Sequence[HeldKey]) -> list[HeldKey]:
    """The held keys an assertion may be signed by: the one its ``kid`` names (by its own kid
    or an alias, such as the DID URL of a verification method), or all of them."""
    kid = assertion.header.get("kid")
    if not isinstance(kid, str):
        return list(held)
    return [key for key in held if kid == key.kid or kid in key.aliases]


def _signature_ok(assertion: ClientAssertion, public: Mapping[str, JSONValue]) -> bool:
    return signature_valid(assertion.parts, str(assertion.header["alg"]), public)


def signature_valid(parts: Sequence[str], algorithm: str, public: Mapping[str, JSONValue]) -> bool:
    """Whether the compact JWS ``parts`` is signed under ``algorithm`` (one of
    :data:`credentials.keys.ALGORITHMS`, suiting the key) by the public JWK ``public``."""
    if algorithm not in _VERIFIERS or algorithm not in key_algorithms(public):
        return False
    try:
        key = jwk.JWK(**public)
        signature = b64url_decode(parts[2])
        _VERIFIERS[algorithm].verify(key, f"{parts[0]}.{parts[1]}".encode(), signature)
    except (InvalidSignature, InvalidToken, ValueError, TypeError, AttributeError):
        return False
    return True


def client_assertion_verify(
    assertion: ClientAssertion, *, organization_id: uuid.UUID, agent_id: uuid.UUID
) -> uuid.UUID:
    """The id of the agent's key that signed the assertion, once every check passed and its
    ``jti`` is spent (in the caller's transaction); raise :class:`AssertionRefused`."""
    expires = _times_checked(assertion.claims)
    if not _audience_ok(assertion.claims, organization_id):
        raise AssertionRefused("audience")
    jti = assertion.claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 200:
        raise AssertionRefused("jti")
    keys = agent_keys(organization_id=organization_id, agent_id=agent_id)
    signer = next(
        (key.id for key in keys for public in _candidates(assertion, [key])
         if _signature_ok(assertion, public)),
        None,
    )  # fmt: skip
    if signer is None:
        # the keys held elsewhere (its DID's) are read only when no registered key signed
        held = held_keys(organization_id=organization_id, agent_id=agent_id)
        if not keys and not held:
            raise AssertionRefused("no_key")
        signer = next(
            (key.id for key in _held_candidates(assertion, held)
             if _signature_ok(assertion, key.public_jwk)),
            None,
        )  # fmt: skip
    if signer is None:
        raise AssertionRefused("signature")
    expires_at = datetime.fromtimestamp(expires, tz=UTC)
    if not assertion_spend(issuer=f"client:{assertion.client_id}", jti=jti, expires_at=expires_at):
        raise AssertionRefused("replayed")
    return signer
