"""The verifier: is this AgentIdP access token good for this resource, right now?

One :class:`Verifier` per resource (its ``audience``), shared by every request of a process and
safe across threads. What it checks, in order:

1. the JWS header: ``typ`` ``at+jwt`` (RFC 9068 2.1), an allowed asymmetric ``alg`` (never
   ``none`` or an HMAC), a ``kid`` found in the issuer's JWKS;
2. the signature with that key, then ``iss`` (exactly the issuer), ``aud`` (this resource),
   ``exp`` and ``nbf`` and ``iat`` with :attr:`Verifier.leeway`, a lifetime no longer than
   :attr:`Verifier.max_lifetime`;
3. the required scopes (``insufficient_scope``, 403);
4. the sender constraint: a token bound to a key (``cnf.jkt``, RFC 9449) needs a DPoP proof
   for this request, and a bearer token is not accepted under the DPoP scheme;
5. its revocation: the token's entry in the issuer's token status list
   (draft-ietf-oauth-status-list), when the token names one.

The issuer's metadata (RFC 8414) gives the JWKS URL. Keys are cached for the JWKS's max-age;
a token signed by a ``kid`` not in the cache causes one refetch (a rotation), at most once per
:attr:`Verifier.refetch_interval`, so forged ``kid`` values cannot make the verifier hammer the
issuer. Status lists are cached for their ``ttl``.
"""

import base64
import binascii
import hashlib
import json
import re
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import jwt
from jwt.exceptions import InvalidTokenError, PyJWKError

from agentidp_verifier.errors import (
    INVALID_DPOP_PROOF,
    INVALID_TOKEN,
    InsufficientScope,
    MalformedRequest,
    TokenMissing,
    TokenRejected,
    VerifierUnavailable,
)
from agentidp_verifier.fetch import MAX_BYTES, Fetch, FetchFailed, fetch_url, url_allowed

ALGORITHMS = ("ES256", "EdDSA", "PS256", "RS256")
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
STATUS_LIST_TYPE = "statuslist+jwt"
MAX_TOKEN_BYTES = 16 * 1024
MAX_STATUS_LIST_BYTES = 16 << 20  # decompressed
MAX_ACT_DEPTH = 32
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_REQUIRED_CLAIMS = ("iss", "aud", "exp", "iat", "sub", "jti", "client_id")
_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n")}  # fmt: skip


@dataclass(frozen=True)
class Actor:
    """One party of a delegation chain (RFC 8693 ``act``): the agent acting, its client id and
    organization, and its issuer when it is a partner's agent."""

    subject: str
    client_id: str | None = None
    organization_id: str | None = None
    issuer: str | None = None


@dataclass(frozen=True)
class VerifiedToken:
    """An accepted token's facts. ``actors`` is the delegation chain, the agent that called
    last first; empty for a token an agent obtained for itself."""

    subject: str
    client_id: str
    scopes: frozenset[str]
    audiences: tuple[str, ...]
    issuer: str
    issued_at: int
    expires_at: int
    token_id: str
    organization_id: str | None
    actors: tuple[Actor, ...]
    key_thumbprint: str | None
    claims: Mapping[str, object] = field(repr=False)

    @property
    def acting_party(self) -> Actor | None:
        """Who presented the token: the latest actor of a delegated token, else ``None`` (the
        subject itself)."""
        return self.actors[0] if self.actors else None


@dataclass(frozen=True)
class DpopContext:
    """What a DPoP proof must match: the request's ``DPoP`` header, method and URL."""

    proof: str | None
    method: str
    url: str


class ReplayCache(Protocol):
    """Where DPoP proof ``jti`` values are spent. The default is per process
    (:class:`MemoryReplayCache`); a fleet of servers shares one (Redis ``SET NX EX``)."""

    def spend(self, key: str, until: float) -> bool:
        """Record ``key`` until ``until``; ``False`` if it was already recorded."""
        ...


class MemoryReplayCache:
    """Spent keys in this process, expired ones dropped, at most ``size`` kept."""

    def __init__(self, size: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self._size = size
        self._clock = clock
        self._spent: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def spend(self, key: str, until: float) -> bool:
        now = self._clock()
        with self._lock:
            while self._spent:
                oldest, expiry = next(iter(self._spent.items()))
                if expiry > now and len(self._spent) < self._size:
                    break
                del self._spent[oldest]
            if key in self._spent and self._spent[key] > now:
                return False
            self._spent[key] = until
            return True


class _NeedsFetch(Exception):
    """Raised in offline mode where the answer needs the network (see :meth:`Verifier.averify`)."""


def _b64decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _b64encode(value: bytes) -> str:
    return base64.urlsafe_b64encode(value).rstrip(b"=").decode()


# Headers parsed before: the issuer signs every token with one of a few headers (alg, typ, kid).
_headers_seen: dict[str, dict[str, object]] = {}


def _header(
    token: str, *, error: str, scheme: str = "Bearer", limit: int = MAX_TOKEN_BYTES
) -> dict[str, object]:
    if len(token) > limit or token.count(".") != 2:
        raise TokenRejected(error, "not a compact JWS", scheme=scheme)
    segment = token.partition(".")[0]
    known = _headers_seen.get(segment)
    if known is not None:
        return dict(known)
    try:
        header = json.loads(_b64decode(segment))
    except (ValueError, binascii.Error, RecursionError) as exc:
        raise TokenRejected(error, "the JWS header is not base64url JSON", scheme=scheme) from exc
    if not isinstance(header, dict):
        raise TokenRejected(error, "the JWS header is not a JSON object", scheme=scheme)
    if len(segment) < 512 and "jwk" not in header:
        if len(_headers_seen) >= 256:
            _headers_seen.clear()
        _headers_seen[segment] = header
    return dict(header)


def jwk_thumbprint(jwk: Mapping[str, object]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public JWK (what ``cnf.jkt`` holds)."""
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None or any(not isinstance(jwk.get(name), str) for name in members):
        raise ValueError("unsupported key type")
    canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"))
    return _b64encode(hashlib.sha256(canonical.encode()).digest())


def request_url_normalized(url: str) -> str:
    """A URL as RFC 9449 4.3 compares ``htu``: no query or fragment, scheme and host in lower
    case, the default port left out."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = (
        host
        if port is None or (scheme, port) in {("https", 443), ("http", 80)}
        else f"{host}:{port}"
    )
    return urlunsplit((scheme, netloc, parts.path or "/", "", ""))


def actors_from(act: object) -> tuple[Actor, ...]:
    """The delegation chain of an ``act`` claim, outermost (the latest caller) first."""
    actors: list[Actor] = []
    while isinstance(act, dict) and len(actors) < MAX_ACT_DEPTH:
        subject = act.get("sub")
        if not isinstance(subject, str):
            raise TokenRejected(INVALID_TOKEN, "an act claim without sub")
        actors.append(
            Actor(
                subject=subject,
                client_id=_string(act.get("client_id")),
                organization_id=_string(act.get("organization_id")),
                issuer=_string(act.get("iss")),
            )
        )
        act = act.get("act")
    if act is not None:
        raise TokenRejected(INVALID_TOKEN, "a malformed or too deep act claim")
    return tuple(actors)


def _string(value: object) -> str | None:
    return value if isinstance(value, str) else None


@dataclass
class _Document:
    value: dict[str, object] | None = None
    expires: float = 0.0
    attempted: float = float("-inf")
    failure: str = ""


class Verifier:
    """Accepts AgentIdP access tokens issued by ``issuer`` for ``audience`` (this resource's
    identifier, as registered with AgentIdP)."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        required_scopes: Iterable[str] = (),
        algorithms: Iterable[str] = ALGORITHMS,
        leeway: int = 10,
        max_lifetime: int = 24 * 3600,
        refetch_interval: float = 30.0,
        metadata_max_age: float = 3600.0,
        check_status: bool = True,
        dpop_max_age: int = 300,
        replay: ReplayCache | None = None,
        resource_metadata: str | None = None,
        fetch: Fetch = fetch_url,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not url_allowed(issuer):
            raise ValueError("the issuer must be an https URL (http only on a loopback host)")
        unknown = set(algorithms) - set(ALGORITHMS)
        if unknown:
            raise ValueError(f"unsupported algorithms: {sorted(unknown)}")
        self.issuer = issuer
        self.audience = audience
        self.required_scopes = frozenset(required_scopes)
        self.algorithms = tuple(algorithms)
        self.leeway = leeway
        self.max_lifetime = max_lifetime
        self.refetch_interval = refetch_interval
        self.metadata_max_age = metadata_max_age
        self.check_status = check_status
        self.dpop_max_age = dpop_max_age
        self.replay: ReplayCache = replay if replay is not None else MemoryReplayCache(clock=clock)
        self.resource_metadata = resource_metadata
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.RLock()
        self._metadata = _Document()
        self._jwks = _Document()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._status: dict[str, _Document] = {}
        self._status_bits: dict[str, tuple[int, bytes]] = {}
        self._last_max_age: int | None = None

    # -- discovery ---------------------------------------------------------------------------

    @property
    def metadata_url(self) -> str:
        """Where RFC 8414 3.1 puts the issuer's metadata: the well-known path between the host
        and the issuer's own path."""
        parts = urlsplit(self.issuer)
        path = parts.path.rstrip("/")
        return urlunsplit(
            (parts.scheme, parts.netloc, f"/.well-known/oauth-authorization-server{path}", "", "")
        )

    def metadata(self, *, offline: bool = False) -> dict[str, object]:
        """The issuer's RFC 8414 metadata, fetched on first use and every
        :attr:`metadata_max_age` seconds; its ``issuer`` must be exactly ours (3.3)."""
        with self._lock:
            document = self._metadata
            now = self._clock()
            if document.value is not None and now < document.expires:
                return document.value
            if offline:
                raise _NeedsFetch
            if document.value is None and now - document.attempted < self.refetch_interval:
                raise VerifierUnavailable(document.failure)
            document.attempted = now
            try:
                value = self._json(self.metadata_url)
                if value.get("issuer") != self.issuer:
                    raise VerifierUnavailable(
                        f"{self.metadata_url} names issuer {value.get('issuer')!r}, not {self.issuer!r}"
                    )
                jwks_uri = value.get("jwks_uri")
                if not isinstance(jwks_uri, str) or not url_allowed(jwks_uri):
                    raise VerifierUnavailable(f"{self.metadata_url} has no usable jwks_uri")
            except VerifierUnavailable as exc:
                if document.value is not None:
                    # keep serving the metadata we had; ask again after the refetch interval
                    document.expires = now + self.refetch_interval
                    return document.value
                document.failure = str(exc)
                raise
            document.value = value
            document.expires = now + self.metadata_max_age
            return value

    def _json(self, url: str) -> dict[str, object]:
        answer = self._get(url)
        try:
            value = json.loads(answer)
        except (ValueError, RecursionError) as exc:
            raise VerifierUnavailable(f"{url} is not JSON") from exc
        if not isinstance(value, dict):
            raise VerifierUnavailable(f"{url} is not a JSON object")
        return value

    def _get(self, url: str) -> bytes:
        try:
            fetched = self._fetch(url)
        except FetchFailed as exc:
            raise VerifierUnavailable(str(exc)) from exc
        if fetched.status != 200:
            raise VerifierUnavailable(f"{url} answered {fetched.status}")
        self._last_max_age = fetched.max_age
        return fetched.body

    # -- keys --------------------------------------------------------------------------------

    def key(self, kid: str, *, offline: bool = False) -> jwt.PyJWK:
        """The issuer's signing key ``kid``: from the cache, else after one (rate-limited)
        refetch of the JWKS."""
        key = self._keys.get(kid)
        if key is not None and self._clock() < self._jwks.expires:
            return key
        with self._lock:
            now = self._clock()
            key = self._keys.get(kid)
            stale = now >= self._jwks.expires
            if key is not None and not stale:
                return key
            if stale or now - self._jwks.attempted >= self.refetch_interval:
                if offline:
                    raise _NeedsFetch
                self._keys_refresh(now)
            key = self._keys.get(kid)
            if key is None:
                if not self._keys and self._jwks.failure:
                    raise VerifierUnavailable(self._jwks.failure)
                raise TokenRejected(INVALID_TOKEN, "signed by a key the issuer does not publish")
            return key

    def _keys_refresh(self, now: float) -> None:
        self._jwks.attempted = now
        try:
            jwks_uri = str(self.metadata()["jwks_uri"])
            document = self._json(jwks_uri)
        except VerifierUnavailable as exc:
            self._jwks.failure = str(exc)
            if self._keys:  # keep the keys we had until the issuer answers again
                self._jwks.expires = now + self.refetch_interval
                return
            raise
        keys: dict[str, jwt.PyJWK] = {}
        listed = document.get("keys")
        for entry in listed if isinstance(listed, list) else []:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            kid = entry.get("kid")
            if not isinstance(kid, str) or entry.get("alg") not in self.algorithms + (None,):
                continue
            try:
                keys[kid] = jwt.PyJWK(entry)
            except (PyJWKError, InvalidTokenError, ValueError, TypeError):
                continue  # a key type this verifier does not use
        self._keys = keys
        self._jwks.failure = ""
        max_age = self._last_max_age if self._last_max_age is not None else 300
        self._jwks.expires = now + max(max_age, 1)

    # -- tokens ------------------------------------------------------------------------------

    def verify(
        self,
        token: str,
        *,
        required_scopes: Iterable[str] = (),
        dpop: DpopContext | None = None,
        offline: bool = False,
    ) -> VerifiedToken:
        """Accept ``token`` or raise :class:`TokenRejected` (or :class:`VerifierUnavailable`
        when the issuer cannot be reached). ``required_scopes`` add to the verifier's own.
        ``dpop`` is the request's proof under the DPoP scheme; ``None`` means the token came
        as ``Bearer``."""
        scheme = "DPoP" if dpop is not None else "Bearer"
        header = _header(token, error=INVALID_TOKEN, scheme=scheme)
        if str(header.get("typ", "")).lower() not in ACCESS_TOKEN_TYPES:
            raise TokenRejected(INVALID_TOKEN, "not an access token (typ at+jwt)", scheme=scheme)
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            raise TokenRejected(INVALID_TOKEN, f"algorithm {algorithm!r} is not accepted", scheme=scheme)  # fmt: skip
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise TokenRejected(INVALID_TOKEN, "no kid in the JWS header", scheme=scheme)
        key = self.key(kid, offline=offline)
        if key.algorithm_name != algorithm:
            raise TokenRejected(INVALID_TOKEN, "the algorithm does not match the key", scheme=scheme)  # fmt: skip
        claims = self._claims_verified(token, key, scheme)
        verified = self._facts(claims, scheme)
        granted = verified.scopes
        missing = (self.required_scopes | frozenset(required_scopes)) - granted
        if missing:
            raise InsufficientScope(frozenset(missing), scheme=scheme)
        if verified.key_thumbprint is not None:
            if dpop is None:
                raise TokenRejected(
                    INVALID_TOKEN, "a DPoP-bound token must be sent with the DPoP scheme and a proof", scheme="DPoP"
                )  # fmt: skip
            self.dpop_verify(dpop, token, verified.key_thumbprint)
        elif dpop is not None:
            raise TokenRejected(INVALID_TOKEN, "a bearer token sent with the DPoP scheme", scheme="DPoP")  # fmt: skip
        if self.check_status:
            self._status_check(claims.get("status"), scheme, offline=offline)
        return verified

    def _claims_verified(self, token: str, key: jwt.PyJWK, scheme: str) -> dict[str, object]:
        """The token's claims once its signature verifies with ``key``, with ``iss``, ``aud``,
        ``exp``, ``nbf`` and ``iat`` checked (RFC 7519 4.1, RFC 9068 4).

        PyJWT parses the keys and computes the signature (its algorithm objects), but the
        compact form is split and the claims checked here: ``jwt.decode`` re-validates each
        base64url segment character by character in Python, which made it three times slower
        than the signature itself. The segments are checked with one regular expression, and
        the signature's encoding for canonical form, so no two strings verify as one token."""
        if not _COMPACT.fullmatch(token):
            raise TokenRejected(INVALID_TOKEN, "not a compact JWS of base64url segments", scheme=scheme)  # fmt: skip
        signing_input, _, encoded_signature = token.rpartition(".")
        try:
            signature = _b64decode(encoded_signature)
            payload = json.loads(_b64decode(signing_input.partition(".")[2]))
        except (ValueError, binascii.Error, RecursionError) as exc:
            raise TokenRejected(INVALID_TOKEN, "the JWS payload is not base64url JSON", scheme=scheme) from exc  # fmt: skip
        if _b64encode(signature) != encoded_signature or not key.Algorithm.verify(
            signing_input.encode(), key.key, signature
        ):
            raise TokenRejected(INVALID_TOKEN, "Signature verification failed", scheme=scheme)
        if not isinstance(payload, dict):
            raise TokenRejected(INVALID_TOKEN, "the JWT claims are not a JSON object", scheme=scheme)  # fmt: skip
        missing = [name for name in _REQUIRED_CLAIMS if payload.get(name) is None]
        if missing:
            raise TokenRejected(INVALID_TOKEN, f'Token is missing the "{missing[0]}" claim', scheme=scheme)  # fmt: skip
        if payload["iss"] != self.issuer:
            raise TokenRejected(INVALID_TOKEN, "Invalid issuer", scheme=scheme)
        audience = payload["aud"]
        if not (audience == self.audience or (isinstance(audience, list) and self.audience in audience)):  # fmt: skip
            raise TokenRejected(INVALID_TOKEN, "Audience doesn't match", scheme=scheme)
        now = self._clock()
        exp, iat = payload["exp"], payload["iat"]
        nbf = payload.get("nbf", iat)
        if type(exp) is not int or type(iat) is not int or type(nbf) is not int:
            raise TokenRejected(INVALID_TOKEN, "exp, iat and nbf must be integers", scheme=scheme)
        if exp <= now - self.leeway:
            raise TokenRejected(INVALID_TOKEN, "Signature has expired", scheme=scheme)
        if nbf > now + self.leeway:
            raise TokenRejected(INVALID_TOKEN, "The token is not yet valid (nbf)", scheme=scheme)
        if iat > now + self.leeway:
            raise TokenRejected(INVALID_TOKEN, "The token is not yet valid (iat)", scheme=scheme)
        return payload

    def _facts(self, claims: dict[str, object], scheme: str) -> VerifiedToken:
        exp, iat = int(claims["exp"]), int(claims["iat"])  # type: ignore[call-overload]
        if exp - iat > self.max_lifetime:
            raise TokenRejected(INVALID_TOKEN, "the token's lifetime is too long", scheme=scheme)
        scope = claims.get("scope", "")
        subject, client_id, jti = claims["sub"], claims["client_id"], claims["jti"]
        if not isinstance(scope, str) or not isinstance(subject, str) or not isinstance(client_id, str) or not isinstance(jti, str):  # fmt: skip
            raise TokenRejected(INVALID_TOKEN, "sub, client_id, jti and scope must be strings", scheme=scheme)  # fmt: skip
        audience = claims["aud"]
        audiences = tuple(audience) if isinstance(audience, list) else (str(audience),)
        cnf = claims.get("cnf")
        thumbprint = None
        if cnf is not None:
            jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
            if not isinstance(jkt, str):
                raise TokenRejected(INVALID_TOKEN, "a cnf claim this verifier cannot check", scheme=scheme)  # fmt: skip
            thumbprint = jkt
        return VerifiedToken(
            subject=subject,
            client_id=client_id,
            scopes=frozenset(scope.split()),
            audiences=tuple(str(value) for value in audiences),
            issuer=self.issuer,
            issued_at=iat,
            expires_at=exp,
            token_id=jti,
            organization_id=_string(claims.get("organization_id")),
            actors=actors_from(claims.get("act")),
            key_thumbprint=thumbprint,
            claims=claims,
        )

    def verify_request(
        self,
        authorization: str | None,
        *,
        dpop_proof: str | None = None,
        method: str = "GET",
        url: str = "",
        required_scopes: Iterable[str] = (),
        offline: bool = False,
    ) -> VerifiedToken:
        """Accept the token of a request's ``Authorization`` header (``Bearer`` or ``DPoP``),
        ``dpop_proof`` being its ``DPoP`` header and ``method``/``url`` what the proof must
        name."""
        if not authorization:
            raise TokenMissing
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if not token or " " in token:
            raise MalformedRequest("the Authorization header must be '<scheme> <token>'")
        if scheme.lower() == "bearer":
            return self.verify(token, required_scopes=required_scopes, offline=offline)
        if scheme.lower() == "dpop":
            context = DpopContext(proof=dpop_proof, method=method, url=url)
            return self.verify(token, required_scopes=required_scopes, dpop=context, offline=offline)  # fmt: skip
        raise TokenMissing

    async def averify_request(
        self,
        authorization: str | None,
        *,
        dpop_proof: str | None = None,
        method: str = "GET",
        url: str = "",
        required_scopes: Iterable[str] = (),
    ) -> VerifiedToken:
        """:meth:`verify_request` for an event loop: answered in the loop from the caches, in a
        worker thread only when the issuer must be asked (the loop never waits on the network)."""
        import asyncio

        scopes = tuple(required_scopes)

        def verified(offline: bool) -> VerifiedToken:
            return self.verify_request(
                authorization, dpop_proof=dpop_proof, method=method, url=url,
                required_scopes=scopes, offline=offline,
            )  # fmt: skip

        try:
            return verified(True)
        except _NeedsFetch:
            return await asyncio.to_thread(verified, False)

    # -- DPoP --------------------------------------------------------------------------------

    def dpop_verify(self, context: DpopContext, token: str, thumbprint: str) -> None:
        """The proof of RFC 9449 4.3 for this request, by the key the token is bound to."""

        def refuse(description: str) -> TokenRejected:
            return TokenRejected(INVALID_DPOP_PROOF, description, scheme="DPoP")

        proof = context.proof
        if not proof:
            raise refuse("a DPoP proof is required")
        header = _header(proof, error=INVALID_DPOP_PROOF, scheme="DPoP")
        algorithm = header.get("alg")
        if header.get("typ") != "dpop+jwt":
            raise refuse("the proof's typ must be dpop+jwt")
        if algorithm not in self.algorithms:
            raise refuse(f"algorithm {algorithm!r} is not accepted")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict) or _PRIVATE_JWK_MEMBERS & set(jwk):
            raise refuse("the proof must carry a public jwk")
        try:
            if jwk_thumbprint(jwk) != thumbprint:
                raise refuse("the proof's key is not the key the token is bound to")
            key = jwt.PyJWK(jwk, algorithm=str(algorithm))
            claims = jwt.decode(
                proof,
                key.key,
                algorithms=[str(algorithm)],
                leeway=self.leeway,
                options={"require": ["iat", "jti", "htm", "htu"], "verify_aud": False},
            )
        except (PyJWKError, InvalidTokenError, ValueError, TypeError) as exc:
            raise refuse(f"the proof does not verify: {exc}") from exc
        now = self._clock()
        iat = claims["iat"]
        if not isinstance(iat, int) or iat < now - self.dpop_max_age - self.leeway:
            raise refuse("the proof is too old")
        if claims["htm"] != context.method.upper():
            raise refuse("the proof's htm is not this request's method")
        if not isinstance(claims["htu"], str) or request_url_normalized(claims["htu"]) != request_url_normalized(context.url):  # fmt: skip
            raise refuse("the proof's htu is not this request's URL")
        if claims.get("ath") != _b64encode(hashlib.sha256(token.encode()).digest()):
            raise refuse("the proof's ath is not this token's hash")
        jti = claims["jti"]
        if not isinstance(jti, str) or not 0 < len(jti) <= 256:
            raise refuse("the proof needs a jti of at most 256 characters")
        if not self.replay.spend(f"{thumbprint}:{jti}", iat + self.dpop_max_age + self.leeway):
            raise refuse("the proof was already used")

    # -- revocation --------------------------------------------------------------------------

    def _status_check(self, status: object, scheme: str, *, offline: bool) -> None:
        if status is None:
            return
        entry = status.get("status_list") if isinstance(status, dict) else None
        index = entry.get("idx") if isinstance(entry, dict) else None
        uri = entry.get("uri") if isinstance(entry, dict) else None
        if not isinstance(index, int) or index < 0 or not isinstance(uri, str):
            raise TokenRejected(INVALID_TOKEN, "a malformed status claim", scheme=scheme)
        if not uri.startswith(self.issuer.rstrip("/") + "/") or not url_allowed(uri):
            raise TokenRejected(INVALID_TOKEN, "a status list outside the issuer", scheme=scheme)
        bits, values = self._status_list(uri, offline=offline)
        position = index * bits
        if position // 8 >= len(values):
            raise TokenRejected(INVALID_TOKEN, "the token's status index is out of range", scheme=scheme)  # fmt: skip
        value = (values[position // 8] >> (position % 8)) & ((1 << bits) - 1)
        if value != 0:
            raise TokenRejected(INVALID_TOKEN, "the token has been revoked", scheme=scheme)

    def _status_list(self, uri: str, *, offline: bool) -> tuple[int, bytes]:
        document = self._status.get(uri)
        now = self._clock()
        if document is not None and now < document.expires:
            return self._status_bits[uri]
        if offline:
            raise _NeedsFetch
        with self._lock:
            document = self._status.setdefault(uri, _Document())
            if now < document.expires:
                return self._status_bits[uri]
            if now - document.attempted < self.refetch_interval and document.failure:
                raise VerifierUnavailable(document.failure)
            document.attempted = now
            try:
                bits, values, ttl = self._status_list_fetch(uri)
            except VerifierUnavailable as exc:
                document.failure = str(exc)
                raise
            self._status_bits[uri] = (bits, values)
            document.failure = ""
            document.expires = now + ttl
            return bits, values

    def _status_list_fetch(self, uri: str) -> tuple[int, bytes, float]:
        token = self._get(uri).decode("ascii", "replace").strip()
        max_age = self._last_max_age
        try:
            header = _header(token, error=INVALID_TOKEN, limit=MAX_BYTES)
            if header.get("typ") != STATUS_LIST_TYPE or header.get("alg") not in self.algorithms:
                raise VerifierUnavailable(f"{uri} is not a status list token")
            key = self.key(str(header.get("kid")))
            claims = jwt.decode(
                token, key.key, algorithms=[str(header["alg"])], leeway=self.leeway,
                options={"require": ["sub", "iat"], "verify_aud": False},
            )  # fmt: skip
        except (TokenRejected, InvalidTokenError) as exc:
            raise VerifierUnavailable(f"{uri}: the status list does not verify: {exc}") from exc
        listed = claims.get("status_list")
        if claims.get("sub") != uri or not isinstance(listed, dict):
            raise VerifierUnavailable(f"{uri}: the status list names another subject")
        bits, lst = listed.get("bits"), listed.get("lst")
        if bits not in (1, 2, 4, 8) or not isinstance(lst, str):
            raise VerifierUnavailable(f"{uri}: a malformed status list")
        try:
            inflater = zlib.decompressobj()
            values = inflater.decompress(_b64decode(lst), MAX_STATUS_LIST_BYTES)
        except (zlib.error, binascii.Error, ValueError) as exc:
            raise VerifierUnavailable(f"{uri}: the status list does not decompress") from exc
        if inflater.unconsumed_tail:
            raise VerifierUnavailable(f"{uri}: the status list is too large")
        ttl = claims.get("ttl")
        lifetime = float(ttl) if isinstance(ttl, int) and ttl > 0 else float(max_age or 60)
        exp = claims.get("exp")
        if isinstance(exp, int):
            lifetime = min(lifetime, exp - self._clock())
        return int(bits), values, max(lifetime, 1.0)

    # -- answers -----------------------------------------------------------------------------

    def challenges(self, rejected: TokenRejected | None = None) -> list[str]:
        """The ``WWW-Authenticate`` values of a refusal (RFC 6750 3, RFC 9449 7.1, RFC 9728 5.1):
        a Bearer challenge and a DPoP one, the refused scheme's carrying the error."""
        scope = " ".join(sorted(self.required_scopes | getattr(rejected, "missing", frozenset())))  # fmt: skip
        answers = []
        for scheme in ("Bearer", "DPoP"):
            params: list[tuple[str, str]] = []
            if rejected is not None and rejected.error and rejected.scheme == scheme:
                params += [("error", rejected.error), ("error_description", rejected.description)]
            if scope:
                params.append(("scope", scope))
            if scheme == "DPoP":
                params.append(("algs", " ".join(self.algorithms)))
            if self.resource_metadata:
                params.append(("resource_metadata", self.resource_metadata))
            quoted = ", ".join(f'{name}="{_quoted(value)}"' for name, value in params)
            answers.append(f"{scheme} {quoted}".rstrip())
        return answers

    def protected_resource_metadata(self) -> dict[str, object]:
        """This resource's RFC 9728 metadata, naming AgentIdP as its authorization server."""
        document: dict[str, object] = {
            "resource": self.audience,
            "authorization_servers": [self.issuer],
            "bearer_methods_supported": ["header"],
            "dpop_signing_alg_values_supported": list(self.algorithms),
        }
        if self.required_scopes:
            document["scopes_supported"] = sorted(self.required_scopes)
        return document


def _quoted(value: str) -> str:
    """A quoted-string's content (RFC 9110 5.6.4): printable ASCII, quotes and backslashes
    escaped."""
    printable = "".join(ch if " " <= ch <= "~" else "?" for ch in value)
    return printable.replace("\\", "\\\\").replace('"', '\\"')
