"""Partners' public keys: fetched through the outbound guard, cached in Redis.

* The JWKS of each partner is cached in Redis for ``FEDERATION_JWKS_CACHE_TTL_SECONDS`` from
  the moment it was fetched; the beat job refreshes it ahead of that, so a partner that is
  briefly unreachable costs nothing. Once the cache has expired and the partner cannot be
  reached, its tokens are refused (``jwks_unavailable``), and further attempts within
  ``FEDERATION_JWKS_REFETCH_INTERVAL_SECONDS`` fail at once instead of waiting on it again.
* A token naming a ``kid`` the cached set lacks triggers at most one refetch per partner per
  interval (a Redis ``SET NX``): a partner that pre-publishes its next key is never refetched
  for it; a flood of made-up kids costs the partner one request per interval.
* With Redis down, the copy on the partner's row serves while it is younger than the TTL.
* Parsed keys are kept per process by the fetched document's digest, so a warm verification
  parses nothing.
"""

import datetime as dt
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from django.conf import settings
from django.utils import timezone
from jwcrypto import jwk
from prometheus_client import Counter
from redis import RedisError

from agentidp.conf import agentidp_settings
from agentidp.deferred import defer_after_request
from agentidp.errors import JSONValue
from agentidp.lru import BoundedLRU
from agentidp.tenancy import tenant_context
from agentidp.usage import redis_client
from federation.choices import KeysFetchResult, Rejection
from federation.fetch import FetchFailed, did_keys_check, jwks_fetch
from federation.models import FederationPartner
from federation.verification import Refused
from oidc.services import jwks_document

logger = logging.getLogger("agentidp.federation")

JWKS_FETCHES = Counter(
    "agentidp_federation_jwks_fetches_total", "Fetches of partners' JWKS, by result.", ["result"]
)
JWKS_FETCH_FAILURES = Counter(
    "agentidp_federation_jwks_fetch_failures_total",
    "Failed fetches of partners' JWKS, by reason.",
    ["reason"],
)

_CACHE = "federation:jwks:{}"
_REFETCH = "federation:jwks-refetch:{}"
_DOWN = "federation:jwks-down:{}"


def cache_ttl() -> int:
    return max(1, int(settings.AGENTIDP["FEDERATION_JWKS_CACHE_TTL_SECONDS"]))


def refetch_interval() -> int:
    return max(1, int(settings.AGENTIDP["FEDERATION_JWKS_REFETCH_INTERVAL_SECONDS"]))


@dataclass(frozen=True)
class KeySet:
    """A partner's signing keys as fetched at ``fetched_at`` (epoch seconds)."""

    keys: Mapping[str, tuple[dict[str, JSONValue], jwk.JWK]]
    fetched_at: float


_parsed: BoundedLRU[str, KeySet] = BoundedLRU(max_entries=1024)


def _key_set(raw: str) -> KeySet:
    digest = hashlib.sha256(raw.encode()).hexdigest()
    found = _parsed.get(digest)
    if found is None:
        stored = json.loads(raw)
        keys = {str(k["kid"]): (dict(k), jwk.JWK(**k)) for k in stored["keys"]}
        found = KeySet(keys=keys, fetched_at=float(stored["fetched_at"]))
        _parsed.put(digest, found)
    return found


def _serialized(keys: list[dict[str, JSONValue]], fetched_at: float) -> str:
    return json.dumps({"keys": keys, "fetched_at": fetched_at}, sort_keys=True)


def keys_cached(partner: FederationPartner) -> KeySet | None:
    """The partner's cached keys, or None when the cache has none younger than the TTL."""
    try:
        raw = redis_client().get(_CACHE.format(partner.id))
    except RedisError:
        logger.warning("federation JWKS cache unavailable; using the partner's stored keys")
        fetched = partner.keys_fetched_at
        if fetched is None or (timezone.now() - fetched).total_seconds() >= cache_ttl():
            return None
        keys = partner.jwks.get("keys")
        listed = [dict(k) for k in keys if isinstance(k, dict)] if isinstance(keys, list) else []
        return _key_set(_serialized(listed, fetched.timestamp()))
    return _key_set(cast(bytes, raw).decode()) if raw else None


def keys_store(partner_id: uuid.UUID, keys: list[dict[str, JSONValue]], fetched_at: float) -> None:
    """Cache ``keys`` for what is left of the TTL (best effort: the row keeps a copy)."""
    remaining = cache_ttl() - (time.time() - fetched_at)
    if remaining <= 0:
        return
    try:
        redis_client().set(
            _CACHE.format(partner_id), _serialized(keys, fetched_at), px=int(remaining * 1000)
        )
    except RedisError:
        logger.warning("federation JWKS not cached: Redis unavailable")


def keys_forget(partner_id: uuid.UUID) -> None:
    try:
        redis_client().delete(
            _CACHE.format(partner_id), _REFETCH.format(partner_id), _DOWN.format(partner_id)
        )
    except RedisError:
        logger.warning("federation JWKS cache not cleared: Redis unavailable")


def local_jwks_uri() -> str:
    """Where this deployment publishes its keys (a partner that is this deployment)."""
    return f"{agentidp_settings().issuer}/.well-known/jwks.json"


def local_keys() -> list[dict[str, JSONValue]]:
    """This deployment's own published keys, read here rather than fetched over the network."""
    document = json.loads(jwks_document())
    keys = document.get("keys") if isinstance(document, dict) else None
    return [key for key in keys if isinstance(key, dict)] if isinstance(keys, list) else []


def keys_refresh(partner: FederationPartner) -> KeySet:
    """Fetch the partner's JWKS now (and cross-check its DID), cache it and record the
    outcome on the partner's row; :class:`FetchFailed` when it cannot be had. A partner that
    is this deployment has its keys read from the deployment's own."""
    now = timezone.now()
    try:
        if partner.is_local:
            keys = local_keys()
        else:
            keys = jwks_fetch(partner.jwks_uri)
        if partner.did:
            did_keys_check(partner.did, partner.issuer, keys)
    except FetchFailed as failure:
        JWKS_FETCHES.labels(result="failed").inc()
        JWKS_FETCH_FAILURES.labels(reason=failure.reason).inc()
        _failure_record(partner, now, failure.detail[:300])
        raise
    JWKS_FETCHES.labels(result="ok").inc()
    document: dict[str, JSONValue] = {"keys": list(keys)}
    FederationPartner.objects.filter(organization_id=partner.organization_id, id=partner.id).update(
        jwks=document, keys_fetched_at=now, last_fetch_at=now,
        last_fetch_result=KeysFetchResult.OK, last_fetch_error="",
    )  # fmt: skip
    partner.jwks, partner.keys_fetched_at, partner.last_fetch_at = document, now, now
    partner.last_fetch_result, partner.last_fetch_error = KeysFetchResult.OK, ""
    keys_store(partner.id, list(keys), now.timestamp())
    _release(_DOWN.format(partner.id))
    return _key_set(_serialized(list(keys), now.timestamp()))


def _failure_record(partner: FederationPartner, now: dt.datetime, detail: str) -> None:
    """Note a failed fetch on the partner's row, in a transaction of its own after the request
    (whose refusal rolls its own writes back), or at once outside one."""
    partner.last_fetch_at, partner.last_fetch_result = now, KeysFetchResult.FAILED
    partner.last_fetch_error = detail

    def write() -> None:
        with tenant_context(partner.organization_id):
            FederationPartner.objects.filter(
                organization_id=partner.organization_id, id=partner.id
            ).update(
                last_fetch_at=now, last_fetch_result=KeysFetchResult.FAILED, last_fetch_error=detail
            )

    if not defer_after_request(write):
        write()


def _claim(key: str) -> bool:
    """Take the partner's fetch slot for this interval (Redis down: take it)."""
    try:
        return bool(redis_client().set(key, b"1", nx=True, ex=refetch_interval()))
    except RedisError:
        return True


def keys_for(partner: FederationPartner, kid: str | None) -> KeySet:
    """The partner's keys, fetched if none are cached, refetched once per interval when
    ``kid`` is not among them; :class:`Refused` (``jwks_unavailable``) when none can be had."""
    cached = keys_cached(partner)
    if cached is None:
        if not _claim(_DOWN.format(partner.id)):
            raise Refused(Rejection.JWKS_UNAVAILABLE)
        try:
            return keys_refresh(partner)
        except FetchFailed as failure:
            raise Refused(Rejection.JWKS_UNAVAILABLE, failure.detail) from failure
    if kid is not None and kid not in cached.keys and _claim(_REFETCH.format(partner.id)):
        try:
            return keys_refresh(partner)
        except FetchFailed:
            return cached
    return cached


def _release(key: str) -> None:
    try:
        redis_client().delete(key)
    except RedisError:
        return


def keys_stale(partner: FederationPartner, *, now: dt.datetime | None = None) -> bool:
    """Whether the beat job should refresh the partner's keys now: past half their TTL."""
    fetched = partner.keys_fetched_at
    moment = now or timezone.now()
    return fetched is None or (moment - fetched).total_seconds() >= cache_ttl() / 2
