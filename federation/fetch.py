"""What federation fetches from a partner: its metadata, its JWKS and its DID document.

Every fetch goes through the one outbound guard (:mod:`agentidp.outbound`): public addresses
only (unless ``AGENTIDP_SSRF_ALLOWLIST`` allows one for development), no redirect followed, the
time and the size of the answer bounded. What comes back is parsed under the input boundary's
JSON rules and checked before anything is stored:

* metadata (OpenID Connect Discovery, else RFC 8414) whose ``issuer`` is exactly the partner's;
* a JWKS of public signing keys only: RSA of 2048 bits or more, EC on P-256/384/521 (the point
  checked on its curve), Ed25519/Ed448; a private member or a symmetric (``oct``) key refuses
  the whole set;
* a did:web document whose ``id`` is the partner's DID and whose verification methods include
  every signing key of the JWKS (the cross-check that the DID and the issuer are one party).
"""

from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from jwcrypto import jwk
from jwcrypto.common import JWException

from agentidp.boundary import InputRejected, json_parse
from agentidp.errors import JSONValue
from agentidp.outbound import (
    OutboundResponse,
    UrlRefused,
    document_limits,
    outbound_request,
    url_parse,
)
from did.web import InvalidDid, url_for_did

MAX_KEYS = 50
# Members that only a private or symmetric JWK has (RFC 7518 6.2.2, 6.3.2, 6.4).
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
CURVES = {"EC": frozenset({"P-256", "P-384", "P-521"}), "OKP": frozenset({"Ed25519", "Ed448"})}
MIN_RSA_BITS = 2048


class FetchFailed(Exception):
    """A partner's document could not be had or is not acceptable; ``detail`` says why in
    words fit for the caller (never a body we fetched)."""

    def __init__(self, detail: str, *, field: str = "issuer", reason: str = "invalid") -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.reason = reason  # a metric label: refused, timeout, connection, status, invalid


def _failure(response: OutboundResponse, what: str, field: str) -> FetchFailed:
    reasons = {
        "refused": "its URL is not allowed",
        "timeout": "it did not answer in time",
        "connection": "it could not be reached",
        "too_large": "its answer is too large",
    }
    if response.error:
        return FetchFailed(
            f"The {what} could not be fetched: {reasons.get(response.error, response.error)}.",
            field=field,
            reason=response.error,
        )
    status = response.status or 0
    if 300 <= status < 400:
        detail = f"The {what} URL redirects (HTTP {status}); redirects are not followed."
    else:
        detail = f"The {what} could not be fetched: HTTP {status}."
    return FetchFailed(detail, field=field, reason="status")


def document_fetch(url: str, *, what: str, field: str) -> dict[str, JSONValue]:
    """GET ``url`` through the guard and parse a JSON object from it."""
    response = outbound_request(
        "GET", url, headers={"Accept": "application/json"}, limits=document_limits()
    )
    if response.error or response.status != 200:
        raise _failure(response, what, field)
    try:
        document = json_parse(response.body)
    except InputRejected as exc:
        raise FetchFailed(f"The {what} is not valid JSON.", field=field) from exc
    if not isinstance(document, dict):
        raise FetchFailed(f"The {what} is not a JSON object.", field=field)
    return document


def metadata_urls(issuer: str) -> list[str]:
    """Where an issuer's metadata lives: OpenID Connect Discovery (the path appended), then
    RFC 8414 (the well-known segment inserted before the issuer's path)."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    origin = f"{parts.scheme}://{parts.netloc}"
    return [
        f"{origin}{path}/.well-known/openid-configuration",
        f"{origin}/.well-known/oauth-authorization-server{path}",
    ]


def metadata_discover(issuer: str) -> dict[str, JSONValue]:
    """The issuer's metadata, whose ``issuer`` must be exactly ``issuer``."""
    last: FetchFailed | None = None
    for url in metadata_urls(issuer):
        try:
            metadata = document_fetch(url, what="issuer's metadata", field="issuer")
        except FetchFailed as failure:
            last = failure
            if failure.reason != "status":
                break  # unreachable or refused: the second location is on the same host
            continue
        if metadata.get("issuer") != issuer:
            raise FetchFailed(
                "The issuer's metadata names another issuer "
                f"({str(metadata.get('issuer'))[:200]!r}).",
                field="issuer",
                reason="issuer_mismatch",
            )
        return metadata
    assert last is not None  # noqa: S101 - the loop ran at least once
    raise last


def same_host(first: str, second: str) -> bool:
    """Whether two URLs name the same host and port (after the guard's normalisation)."""
    try:
        a, b = url_parse(first), url_parse(second)
    except UrlRefused:
        return False
    return (a.host, a.port) == (b.host, b.port)


def _key_refusal(index: int, key: Mapping[str, JSONValue]) -> str | None:
    kty = key.get("kty")
    if kty == "oct":
        return f"key {index} is a symmetric (oct) key"
    found = sorted(PRIVATE_MEMBERS.intersection(key))
    if found:
        return f"key {index} has private key material ({', '.join(found)})"
    if kty not in ("RSA", "EC", "OKP"):
        return f"key {index} has an unsupported kty {str(kty)[:20]!r}"
    if kty in CURVES and key.get("crv") not in CURVES[str(kty)]:
        return f"key {index} has an unsupported curve"
    kid = key.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= 200:
        return f"key {index} has no kid"
    try:
        parsed = jwk.JWK(**key)
    except (JWException, ValueError, TypeError) as exc:
        return f"key {index} is not a valid public key ({type(exc).__name__})"
    if parsed.has_private:
        return f"key {index} has private key material"
    if key.get("use", "sig") != "sig":
        return None  # not a signing key: never used here
    try:
        public = parsed.get_op_key("verify")  # builds the key: an EC point off its curve fails
    except (JWException, ValueError, TypeError) as exc:
        return f"key {index} is not a valid public key ({type(exc).__name__})"
    if kty == "RSA" and public.key_size < MIN_RSA_BITS:
        return f"key {index} is an RSA key under {MIN_RSA_BITS} bits"
    return None


def jwks_validate(
    document: Mapping[str, JSONValue], *, field: str = "jwks_uri"
) -> list[dict[str, JSONValue]]:
    """The signing keys of a JWKS, each checked; :class:`FetchFailed` for the whole set when
    one key is private, symmetric or invalid, or when none can sign."""
    keys = document.get("keys")
    if not isinstance(keys, list) or not keys:
        raise FetchFailed("The JWKS has no keys.", field=field)
    if len(keys) > MAX_KEYS:
        raise FetchFailed(f"The JWKS has more than {MAX_KEYS} keys.", field=field)
    signing: list[dict[str, JSONValue]] = []
    kids: set[str] = set()
    for index, key in enumerate(keys):
        if not isinstance(key, dict):
            raise FetchFailed(
                f"The JWKS is not acceptable: key {index} is not an object.", field=field
            )
        refusal = _key_refusal(index, key)
        if refusal:
            raise FetchFailed(f"The JWKS is not acceptable: {refusal}.", field=field)
        kid = str(key["kid"])
        if kid in kids:
            raise FetchFailed(
                f"The JWKS is not acceptable: kid {kid[:50]!r} is repeated.", field=field
            )
        kids.add(kid)
        if key.get("use", "sig") == "sig":
            signing.append(dict(key))
    if not signing:
        raise FetchFailed("The JWKS has no signing key.", field=field)
    return signing


def jwks_fetch(jwks_uri: str) -> list[dict[str, JSONValue]]:
    return jwks_validate(document_fetch(jwks_uri, what="JWKS", field="jwks_uri"))


def did_document_url(did: str, issuer: str) -> str:
    """Where ``did`` (did:web) resolves. The method says https; a development issuer served
    over plain http on the DID's own host is fetched over http, as the issuer itself is."""
    try:
        url = url_for_did(did)
    except InvalidDid as exc:
        raise FetchFailed("Not a did:web identifier.", field="did") from exc
    issuer_parts = urlsplit(issuer)
    if issuer_parts.scheme == "http" and urlsplit(url).netloc == issuer_parts.netloc:
        url = "http://" + url[len("https://") :]
    return url


def thumbprint(key: Mapping[str, JSONValue]) -> str:
    """The RFC 7638 thumbprint of a public JWK."""
    return str(
        jwk.JWK(**{k: v for k, v in key.items() if k not in ("kid", "alg", "use")}).thumbprint()
    )


def did_keys_check(did: str, issuer: str, keys: Sequence[Mapping[str, JSONValue]]) -> None:
    """Resolve ``did`` and require every signing key of the JWKS among its verification
    methods (by RFC 7638 thumbprint); :class:`FetchFailed` otherwise."""
    document = document_fetch(did_document_url(did, issuer), what="DID document", field="did")
    if document.get("id") != did:
        raise FetchFailed(
            "The DID document is for another DID.", field="did", reason="did_mismatch"
        )
    methods = document.get("verificationMethod")
    listed: set[str] = set()
    for method in methods if isinstance(methods, list) else []:
        public = method.get("publicKeyJwk") if isinstance(method, dict) else None
        if isinstance(public, dict) and not PRIVATE_MEMBERS.intersection(public):
            try:
                listed.add(thumbprint(public))
            except (JWException, ValueError, TypeError):
                continue
    missing = [str(key.get("kid")) for key in keys if thumbprint(key) not in listed]
    if missing:
        raise FetchFailed(
            "The DID document does not list the issuer's keys "
            f"({', '.join(k[:40] for k in missing[:3])}).",
            field="did",
            reason="did_mismatch",
        )
