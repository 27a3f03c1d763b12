"""Verification of a token a partner issued: pure rules, no I/O (the keys come from
:mod:`federation.keys`).

The checks run in a fixed order, and the first that fails names the :class:`Rejection`:
size, JOSE framing, ``alg`` on the allow-list (never ``none``, never HS*: a partner's public key
must not double as an HMAC secret), no header that points at other keys (``jku``, ``x5u``,
``jwk``, ``x5c``) or asks for extensions (``crit``), ``typ`` (at+jwt or JWT, when present), the
issuer's partner and its standing, the key named by ``kid`` (compatible with ``alg``), the
signature, then the claims: ``sub`` and ``exp`` present, ``exp``/``nbf``/``iat`` within the
leeway, ``aud`` naming this deployment, ``organization_id`` on the partner's allow-list.
"""

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from jwcrypto import jwk
from jwcrypto.common import JWException
from jwcrypto.jwa import JWA

from agentidp.boundary import InputRejected, json_parse
from agentidp.errors import JSONValue
from federation.choices import PartnerStatus, Rejection
from oidc.tokens import FORBIDDEN_HEADERS, InvalidToken, b64url_decode

ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
TYPES = frozenset({"at+jwt", "application/at+jwt", "jwt"})
_CURVE_OF = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
MAX_LEEWAY_SECONDS = 300


class Refused(Exception):
    """The token is not accepted, for ``reason``."""

    def __init__(self, reason: Rejection, detail: str = "") -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.detail = detail or reason.label


@dataclass(frozen=True)
class ParsedToken:
    """A compact JWS read but not yet trusted."""

    header: dict[str, JSONValue]
    claims: dict[str, JSONValue]
    signing_input: bytes
    signature: bytes

    @property
    def issuer(self) -> str:
        return str(self.claims["iss"])

    @property
    def algorithm(self) -> str:
        return str(self.header["alg"])

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None


def _segment_json(segment: str) -> dict[str, JSONValue]:
    try:
        value = json_parse(b64url_decode(segment))
    except (InvalidToken, InputRejected) as exc:
        raise Refused(Rejection.MALFORMED) from exc
    if not isinstance(value, dict):
        raise Refused(Rejection.MALFORMED)
    return value


def token_parse(token: str, *, max_bytes: int) -> ParsedToken:
    """Read ``token``'s framing and header rules, before any partner or key is looked up."""
    if len(token) > max_bytes:
        raise Refused(
            Rejection.TOKEN_TOO_LARGE, f"A token may have at most {max_bytes} characters."
        )
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1] or not token.isascii():
        raise Refused(Rejection.MALFORMED)
    header = _segment_json(parts[0])
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise Refused(Rejection.UNSUPPORTED_ALGORITHM)
    if FORBIDDEN_HEADERS.intersection(header):
        raise Refused(Rejection.FORBIDDEN_HEADER)
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in TYPES):
        raise Refused(Rejection.BAD_TYPE)
    if "kid" in header and not isinstance(header["kid"], str):
        raise Refused(Rejection.MALFORMED)
    claims = _segment_json(parts[1])
    try:
        signature = b64url_decode(parts[2]) if parts[2] else b""
    except InvalidToken as exc:
        raise Refused(Rejection.MALFORMED) from exc
    if not signature:
        raise Refused(Rejection.MALFORMED)
    if not isinstance(claims.get("iss"), str) or not claims["iss"]:
        raise Refused(Rejection.MISSING_CLAIM, "The token has no iss claim.")
    return ParsedToken(header, claims, f"{parts[0]}.{parts[1]}".encode(), signature)


def standing_check(status: str) -> None:
    """A partner that may vouch for tokens now (its effective status)."""
    if status == PartnerStatus.SUSPENDED:
        raise Refused(Rejection.PARTNER_SUSPENDED)
    if status == PartnerStatus.EXPIRED:
        raise Refused(Rejection.PARTNER_EXPIRED)


def key_fits(key: Mapping[str, JSONValue], algorithm: str) -> bool:
    """Whether ``key`` can verify ``algorithm`` (and its own ``alg``, if it names one, agrees)."""
    if key.get("alg", algorithm) != algorithm:
        return False
    kty = key.get("kty")
    if algorithm[:2] in ("RS", "PS"):
        return kty == "RSA"
    if algorithm in _CURVE_OF:
        return kty == "EC" and key.get("crv") == _CURVE_OF[algorithm]
    return kty == "OKP" and key.get("crv") in ("Ed25519", "Ed448")


def candidate_keys(
    parsed: ParsedToken, keys: Mapping[str, tuple[dict[str, JSONValue], jwk.JWK]]
) -> list[jwk.JWK] | None:
    """The keys that may have signed ``parsed``: the one its kid names (None when no key has
    that kid), or, without a kid, every key that fits its algorithm."""
    if parsed.kid is not None:
        found = keys.get(parsed.kid)
        if found is None:
            return None
        return [found[1]] if key_fits(found[0], parsed.algorithm) else []
    return [key for public, key in keys.values() if key_fits(public, parsed.algorithm)]


def signature_check(parsed: ParsedToken, candidates: Sequence[jwk.JWK]) -> None:
    signer = JWA.signing_alg(parsed.algorithm)
    for key in candidates:
        try:
            signer.verify(key, parsed.signing_input, parsed.signature)
        except (InvalidSignature, JWException, ValueError, TypeError):
            continue
        return
    raise Refused(Rejection.BAD_SIGNATURE)


def _number(claims: Mapping[str, JSONValue], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Refused(Rejection.MALFORMED, f"The {name} claim is not a number.")
    try:
        return float(value)
    except OverflowError as exc:  # an integer of hundreds of digits
        raise Refused(Rejection.MALFORMED, f"The {name} claim is out of range.") from exc


def claims_check(
    claims: Mapping[str, JSONValue],
    *,
    audiences: frozenset[str],
    leeway: int,
    allowed_organizations: Sequence[str],
    now: float | None = None,
) -> None:
    """The claims of a token whose signature verified."""
    moment = time.time() if now is None else now
    leeway = max(0, min(leeway, MAX_LEEWAY_SECONDS))
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise Refused(Rejection.MISSING_CLAIM, "The token has no sub claim.")
    expires = _number(claims, "exp")
    if expires is None:
        raise Refused(Rejection.MISSING_CLAIM, "The token has no exp claim.")
    if expires + leeway <= moment:
        raise Refused(Rejection.EXPIRED)
    for name in ("nbf", "iat"):
        value = _number(claims, name)
        if value is not None and value - leeway > moment:
            raise Refused(Rejection.NOT_YET_VALID, f"The token's {name} is in the future.")
    audience = claims.get("aud")
    listed = audience if isinstance(audience, list) else [audience]
    if not any(isinstance(item, str) and item in audiences for item in listed):
        raise Refused(Rejection.AUDIENCE_MISMATCH)
    if allowed_organizations:
        organization = claims.get("organization_id")
        if not isinstance(organization, str) or organization not in allowed_organizations:
            raise Refused(Rejection.ORGANIZATION_NOT_ALLOWED)
