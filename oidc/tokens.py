"""Access tokens as JWTs per RFC 9068: minted by DOT's generator hook, verified offline.

Verification refuses, before any signature check: ``alg`` none or outside the allowed
asymmetric set, a missing or foreign ``typ``, an unknown or malformed ``kid``, and the
``jku``/``x5u``/``jwk``/``x5c``/``crit`` headers; then checks the signature with the key the kid
names (whose algorithm must equal the header's), and ``iss``, ``aud``, ``exp``, ``nbf``.
"""

import base64
import binascii
import json
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from cryptography.exceptions import InvalidSignature
from django.conf import settings
from jwcrypto.jwa import JWA
from oauth2_provider.oauth2_validators import is_valid_resource_uri
from oauthlib.common import Request as OAuthRequest

from agentidp.conf import agentidp_settings
from agentidp.errors import JSONValue
from oidc.keys import key_ring

if TYPE_CHECKING:
    from oidc.models import AccessToken

ALLOWED_ALGORITHMS = frozenset({"ES256", "RS256", "EdDSA"})
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
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


@dataclass
class Issuance:
    """What one token request carries between DOT's hooks (validator, generator, save)."""

    audiences: list[str] = field(default_factory=list)
    credential_id: uuid.UUID | None = None
    claims: dict[str, JSONValue] = field(default_factory=dict)
    # The row this request wrote, for DOT's re-read of it (see AccessTokenQuerySet.get).
    issued: "AccessToken | None" = None
    # The usage counter admission reserved a token on; given back unless one is issued.
    reserved: str = ""


_issuance: ContextVar[Issuance | None] = ContextVar("agentidp_issuance", default=None)


@contextmanager
def issuance_scope() -> Iterator[Issuance]:
    """Open the state of one token request (the token view wraps DOT's processing in it)."""
    state = Issuance()
    token = _issuance.set(state)
    try:
        yield state
    finally:
        _issuance.reset(token)


def issued_in_this_request(token_checksum: str) -> "AccessToken | None":
    """The access token the current token request saved, if its checksum is this one."""
    state = _issuance.get()
    issued = state.issued if state else None
    return issued if issued is not None and issued.token_checksum == token_checksum else None


def issuance() -> Issuance:
    state = _issuance.get()
    if state is None:
        state = Issuance()
        _issuance.set(state)
    return state


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


def access_token_generate(request: OAuthRequest) -> str:
    """DOT's ``ACCESS_TOKEN_GENERATOR``: sign the RFC 9068 claims for ``request.client``."""
    signing = key_ring.signing()
    if signing is None:
        from oidc.services import signing_key_ensure_committed

        signing_key_ensure_committed()
        signing = key_ring.signing()
        assert signing is not None  # noqa: S101 - signing_key_ensure just created one
    from credentials.models import Client

    now = int(time.time())
    client = cast(Client, request.client)
    jti = str(uuid.uuid4())
    state = issuance()
    audiences = state.audiences or [api_audience()]
    claims: dict[str, JSONValue] = {
        "iss": agentidp_settings().issuer,
        "sub": str(client.agent_id),
        "aud": audiences[0] if len(audiences) == 1 else list(audiences),
        "exp": now + int(request.expires_in or 0),
        "iat": now,
        "nbf": now,
        "jti": jti,
        "client_id": client.client_id,
        "scope": " ".join(request.scopes or []),
        "organization_id": str(client.organization_id),
    }
    header = {"alg": signing.algorithm, "typ": "at+jwt", "kid": signing.kid}
    signing_input = f"{_b64_encode_json(header)}.{_b64_encode_json(claims)}"
    signature = _SIGNERS[signing.algorithm].sign(signing.key, signing_input.encode())
    state.claims = claims
    return f"{signing_input}.{_b64_encode(signature)}"


def _b64_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64_encode_json(value: Mapping[str, JSONValue]) -> str:
    return _b64_encode(json.dumps(value, separators=(",", ":")).encode())


def _b64_decode(segment: str) -> bytes:
    """Strict base64url: one encoding per value, so a re-encoded signature is no token."""
    try:
        decoded = base64.b64decode(segment + "=" * (-len(segment) % 4), b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidToken("malformed") from exc
    if _b64_encode(decoded) != segment:
        raise InvalidToken("malformed")
    return decoded


def _b64_json(segment: str) -> dict[str, JSONValue]:
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
    """Verify an access token offline; raise :class:`InvalidToken` naming the reason."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise InvalidToken("malformed")
    header = _b64_json(parts[0])
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in ALLOWED_ALGORITHMS:
        raise InvalidToken("algorithm")
    if FORBIDDEN_HEADERS.intersection(header):
        raise InvalidToken("header")
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES:
        raise InvalidToken("type")
    kid = header.get("kid")
    found = key_ring.verification_key(kid) if isinstance(kid, str) else None
    if found is None:
        raise InvalidToken("kid")
    key_algorithm, key = found
    if key_algorithm != algorithm:
        raise InvalidToken("algorithm")
    signature = _b64_decode(parts[2])
    try:
        _SIGNERS[key_algorithm].verify(key, f"{parts[0]}.{parts[1]}".encode(), signature)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise InvalidToken("signature") from exc
    claims = _b64_json(parts[1])
    _check_claims(
        claims,
        audience=None if any_audience else (audience or api_audience()),
        check_times=check_times,
    )
    return VerifiedToken(claims=claims)


def _check_claims(
    claims: Mapping[str, JSONValue], *, audience: str | None, check_times: bool
) -> None:
    required = ("iss", "sub", "aud", "exp", "iat", "jti", "client_id", "organization_id")
    if any(name not in claims for name in required):
        raise InvalidToken("claims")
    if claims["iss"] != agentidp_settings().issuer:
        raise InvalidToken("issuer")
    audiences = claims["aud"]
    listed: Sequence[JSONValue] = audiences if isinstance(audiences, list) else [audiences]
    if audience is not None and audience not in listed:
        raise InvalidToken("audience")
    if not check_times:
        return
    leeway = min(int(settings.AGENTIDP["TOKEN_LEEWAY_SECONDS"]), 60)
    now = time.time()
    exp, nbf = claims["exp"], claims.get("nbf", claims["iat"])
    if not isinstance(exp, int | float) or not isinstance(nbf, int | float):
        raise InvalidToken("claims")
    if exp + leeway <= now:
        raise InvalidToken("expired")
    if nbf - leeway > now:
        raise InvalidToken("not_yet_valid")
