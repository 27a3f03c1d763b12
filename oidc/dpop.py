"""DPoP (RFC 9449): tokens bound to a key the client holds, proven on every use.

A proof is a JWT (``typ: dpop+jwt``) the client signs with its private key, the public JWK in
its header. Checked before it binds or unlocks anything (RFC 9449 4.3): the shape and size, the
algorithm (ES256, EdDSA, PS256, RS256) and key (a public EC P-256, Ed25519 or RSA of 2048 bits
or more; no ``jku``/``x5u``/``x5c``/``crit``), the signature, ``htm`` and ``htu`` (the request's
method and URL, query and fragment left out), ``iat`` within ``AGENTIDP_DPOP_PROOF_MAX_AGE``,
``ath`` (the hash of the access token it goes with, at a resource), the server nonce where
``AGENTIDP_DPOP_NONCE_REQUIRED`` (the default) asks for one, and last the ``jti``: single use
per key until the proof could no longer be accepted, spent durably (:mod:`oidc.replay`, the
caller's transaction).

Nonces are stateless: a period number and its HMAC under the deployment's secret key, so every
web process issues and accepts the same ones without shared state. A nonce is good for the
period it was issued in and the next (five to ten minutes), at the token endpoint and the API
alike.
"""

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest
from django.utils.crypto import salted_hmac
from jwcrypto import jwk

from agentidp.conf import agentidp_settings
from agentidp.errors import JSONValue, ValidationFailed, auth_challenge
from credentials.keys import ALGORITHMS, public_jwk_checked
from credentials.models import Client
from oidc.assertions import signature_valid
from oidc.replay import assertion_spend
from oidc.services import client_refusal_record
from oidc.tokens import FORBIDDEN_HEADERS, InvalidToken, b64url_json, token_leeway

PROOF_TYPE = "dpop+jwt"
DPOP_ALGORITHMS = tuple(ALGORITHMS)
MAX_PROOF_BYTES = 8192
NONCE_PERIOD_SECONDS = 300
# The JWK travels in the header (RFC 9449 4.2); a key named by reference is no proof.
_FORBIDDEN = FORBIDDEN_HEADERS - {"jwk"}
_NONCE_SALT = "agentidp.oidc.dpop.nonce"

REFUSED_EVENT = "token.dpop_refused"
INVALID_PROOF = "invalid_dpop_proof"
USE_NONCE = "use_dpop_nonce"

_DESCRIPTIONS = {
    "missing": "A DPoP proof is required (RFC 9449): send one in the DPoP header.",
    "multiple": "Send exactly one DPoP proof.",
    "malformed": "The DPoP proof is not a compact JWS.",
    "type": 'The DPoP proof\'s typ must be "dpop+jwt".',
    "algorithm": f"The DPoP proof's alg must be one of {', '.join(DPOP_ALGORITHMS)}.",
    "header": "The DPoP proof carries its public key as jwk; jku, x5u, x5c and crit are refused.",
    "key": "The DPoP proof's jwk must be a public EC P-256, Ed25519 or RSA (2048 bits or more) "
    "key suiting its alg.",
    "signature": "The DPoP proof's signature does not verify with its jwk.",
    "key_mismatch": "The DPoP proof is signed with another key than the token is bound to.",
    "htm": "The DPoP proof's htm is not this request's method.",
    "htu": "The DPoP proof's htu is not this request's URL.",
    "iat": "The DPoP proof's iat is missing, in the future or too old.",
    "jti": "The DPoP proof needs a jti of 1 to 200 characters.",
    "ath": "The DPoP proof's ath is not the hash of the access token sent with it.",
    "nonce": "Use the server's nonce (the DPoP-Nonce header of this answer) in the proof.",
    "replayed": "This DPoP proof was used before: make a new one for every request.",
}


class DpopRefused(Exception):
    """A DPoP proof was missing or wrong; ``error`` is the OAuth error code (RFC 9449 12.2)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = USE_NONCE if reason == "nonce" else INVALID_PROOF

    @property
    def description(self) -> str:
        return _DESCRIPTIONS.get(self.reason, "The DPoP proof is invalid.")


@dataclass(frozen=True)
class DpopProof:
    """A proof that checked out: the thumbprint of its key (RFC 7638, the ``cnf.jkt`` of a
    bound token) and its ``jti``."""

    jkt: str
    jti: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _nonce_for(period: int) -> str:
    mac = salted_hmac(_NONCE_SALT, str(period), algorithm="sha256").digest()[:16]
    return _b64(period.to_bytes(8, "big") + mac)


def nonce_issue() -> str:
    """A nonce for the ``DPoP-Nonce`` header: good for this period and the next."""
    return _nonce_for(int(time.time()) // NONCE_PERIOD_SECONDS)


def nonce_valid(nonce: str) -> bool:
    """Whether ``nonce`` was issued by this deployment in this period or the last."""
    if not 0 < len(nonce) <= 64:
        return False
    try:
        raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
    except (binascii.Error, ValueError):
        return False
    if len(raw) != 24:
        return False
    period = int.from_bytes(raw[:8], "big")
    current = int(time.time()) // NONCE_PERIOD_SECONDS
    return period in (current, current - 1) and hmac.compare_digest(nonce, _nonce_for(period))


def nonce_required() -> bool:
    return bool(settings.AGENTIDP["DPOP_NONCE_REQUIRED"])


def access_token_hash(token: str) -> str:
    """``ath`` (RFC 9449 4.2): the base64url SHA-256 of the access token's ASCII."""
    return _b64(hashlib.sha256(token.encode("ascii", "replace")).digest())


def _url_normalized(url: str) -> str | None:
    """``url`` without query and fragment, scheme and host lowercased, a default port dropped
    (RFC 3986 6.2.2, 6.2.3), as ``htu`` is compared (RFC 9449 4.3 step 9)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path or '/'}"


def request_urls(request: HttpRequest) -> list[str]:
    """The URLs a proof for ``request`` may name as ``htu``: the path under the issuer (what
    metadata advertises, behind any proxy) and as the request itself reached us."""
    issuer = urlsplit(agentidp_settings().issuer)
    urls = [f"{issuer.scheme}://{issuer.netloc}{request.path}"]
    try:
        urls.append(request.build_absolute_uri(request.path))
    except DisallowedHost:
        pass
    return urls


def _header_key(header: Mapping[str, JSONValue]) -> dict[str, JSONValue]:
    if header.get("typ") != PROOF_TYPE:
        raise DpopRefused("type")
    if header.get("alg") not in DPOP_ALGORITHMS:
        raise DpopRefused("algorithm")
    if _FORBIDDEN.intersection(header):
        raise DpopRefused("header")
    try:
        return public_jwk_checked(header.get("jwk"))
    except ValidationFailed as exc:
        raise DpopRefused("key") from exc


def _iat_checked(claims: Mapping[str, JSONValue]) -> int:
    issued = claims.get("iat")
    if isinstance(issued, bool) or not isinstance(issued, int):
        raise DpopRefused("iat")
    now, leeway = int(time.time()), token_leeway()
    if not now - int(settings.AGENTIDP["DPOP_PROOF_MAX_AGE"]) - leeway <= issued <= now + leeway:
        raise DpopRefused("iat")
    return issued


def proof_verify(
    proof: str | None,
    *,
    method: str,
    urls: Sequence[str],
    access_token: str | None = None,
    jkt: str | None = None,
) -> DpopProof:
    """The checked proof ``proof`` (the ``DPoP`` header's value) for a request of ``method`` to
    one of ``urls``, made with the key ``jkt`` names (where a token is bound to one) and for
    ``access_token`` (at a resource); its ``jti`` is spent. Raise :class:`DpopRefused`."""
    if proof is None or not proof.strip():
        raise DpopRefused("missing")
    if "," in proof or any(c.isspace() for c in proof.strip()):
        raise DpopRefused("multiple")  # several DPoP headers arrive joined by commas
    proof = proof.strip()
    parts = proof.split(".")
    if len(proof) > MAX_PROOF_BYTES or len(parts) != 3 or not all(parts):
        raise DpopRefused("malformed")
    try:
        header, claims = b64url_json(parts[0]), b64url_json(parts[1])
    except InvalidToken as exc:
        raise DpopRefused("malformed") from exc
    public = _header_key(header)
    if not signature_valid(parts, str(header["alg"]), public):
        raise DpopRefused("signature")
    thumbprint = jwk.JWK(**public).thumbprint()
    if jkt is not None and not hmac.compare_digest(thumbprint, jkt):
        raise DpopRefused("key_mismatch")
    if claims.get("htm") != method:
        raise DpopRefused("htm")
    named = claims.get("htu")
    expected = {_url_normalized(url) for url in urls} - {None}
    if not isinstance(named, str) or len(named) > 2048 or _url_normalized(named) not in expected:
        raise DpopRefused("htu")
    issued = _iat_checked(claims)
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= 200:
        raise DpopRefused("jti")
    if access_token is not None:
        ath = claims.get("ath")
        if not isinstance(ath, str) or not hmac.compare_digest(
            ath, access_token_hash(access_token)
        ):
            raise DpopRefused("ath")
    if nonce_required():
        nonce = claims.get("nonce")
        if not isinstance(nonce, str) or not nonce_valid(nonce):
            raise DpopRefused("nonce")
    last_accepted = issued + int(settings.AGENTIDP["DPOP_PROOF_MAX_AGE"]) + 2 * token_leeway()
    if not assertion_spend(
        issuer=f"dpop:{thumbprint}", jti=jti, expires_at=datetime.fromtimestamp(last_accepted, UTC)
    ):
        raise DpopRefused("replayed")
    return DpopProof(jkt=thumbprint, jti=jti)


def dpop_challenge(error: str = "", description: str = "") -> str:
    """``WWW-Authenticate: DPoP`` (RFC 9449 7.1) for a resource's refusal: the algorithms
    accepted, and the error where there was one."""
    params = {"error": error, "error_description": description} if error else {}
    params["algs"] = " ".join(DPOP_ALGORITHMS)
    return auth_challenge("DPoP", params)


def token_binding(claims: Mapping[str, JSONValue]) -> str | None:
    """The ``cnf.jkt`` a token is bound to (RFC 9449 6.1), or None for a bearer token."""
    confirmation = claims.get("cnf")
    if isinstance(confirmation, dict):
        jkt = confirmation.get("jkt")
        if isinstance(jkt, str):
            return jkt
    return None


def dpop_refusal_record(client: Client, refused: DpopRefused) -> None:
    """Audit a token request refused for its DPoP proof (after the request, which rolls back)."""
    client_refusal_record(client, REFUSED_EVENT, {"reason": refused.reason, "error": refused.error})
