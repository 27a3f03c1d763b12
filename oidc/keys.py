"""Signing keys: their lifecycle's first step, and the in-process key ring of parsed keys.

Every algorithm the deployment signs with (:class:`SigningAlgorithm`: ES256 for access tokens
by default, RS256, ES256 or EdDSA for a client's id_tokens) has its own lifecycle: a ``next``
key (published, not signing), a ``current`` key (signing) and ``retired`` keys (published until
the last token they signed has expired). Rotation (``oidc.services.signing_key_rotate``)
promotes the next key only once it has been published for ``AGENTIDP_KEY_PREPUBLISH_SECONDS``.

Parsing a key costs milliseconds, so each process keeps the parsed JWKs: the current signing
keys are re-checked against the database every few seconds (so a rotation done elsewhere is
picked up), private keys are read from the secret store once per kid.
"""

import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, connection, connections, transaction
from django.utils import timezone
from jwcrypto import jwk
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis import RedisError

from agentidp.errors import JSONValue
from agentidp.events import event_record
from agentidp.principals import Principal
from agentidp.secrets import platform_path, secret_store
from agentidp.tenancy import platform_context
from agentidp.usage import redis_client
from credentials.choices import SigningAlgorithm
from oidc.choices import KeyStatus
from oidc.models import SigningKey
from organizations.models import SYSTEM_ORGANIZATION_ID

logger = logging.getLogger("agentidp.keys")

KID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
REFRESH_SECONDS = 10.0


def private_key_path(kid: str) -> str:
    return platform_path(f"signing-keys/{kid}")


def access_token_algorithm() -> str:
    """The algorithm access tokens are signed with (``AGENTIDP_SIGNING_ALGORITHM``)."""
    return str(settings.AGENTIDP["SIGNING_ALGORITHM"])


@dataclass(frozen=True)
class SigningMaterial:
    """What a signer needs: the kid, its algorithm and the parsed private key."""

    kid: str
    algorithm: str
    key: jwk.JWK


class KeyRing:
    """Thread-safe cache of the current signing key and the published verification keys."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._signing: dict[str, SigningMaterial] = {}
        self._private: dict[str, jwk.JWK] = {}
        self._public: dict[str, tuple[str, jwk.JWK]] = {}
        self._loaded_at = 0.0

    def clear(self) -> None:
        with self._lock:
            self._signing, self._private, self._public, self._loaded_at = {}, {}, {}, 0.0

    def _refresh(self) -> None:
        now = timezone.now()
        published = SigningKey.objects.exclude(status=KeyStatus.RETIRED).union(
            SigningKey.objects.filter(status=KeyStatus.RETIRED, verify_until__gt=now)
        )
        public: dict[str, tuple[str, jwk.JWK]] = {}
        signing: dict[str, SigningMaterial] = {}
        for key in published:
            public[key.kid] = (key.algorithm, jwk.JWK(**key.public_jwk))
            if key.status == KeyStatus.CURRENT:
                private = self._private.get(key.kid)
                if private is None:
                    stored = secret_store().read(private_key_path(key.kid))
                    private = jwk.JWK.from_json(stored["jwk"])
                    self._private[key.kid] = private
                signing[key.algorithm] = SigningMaterial(
                    kid=key.kid, algorithm=key.algorithm, key=private
                )
        self._public, self._signing, self._loaded_at = public, signing, time.monotonic()

    def _fresh(self, force: bool = False) -> None:
        if force or time.monotonic() - self._loaded_at > REFRESH_SECONDS:
            with self._lock:
                self._refresh()

    def signing(self, algorithm: str | None = None) -> SigningMaterial | None:
        """The current key for ``algorithm`` (default: the access tokens'), or None if there is
        none yet."""
        self._fresh()
        return self._signing.get(algorithm or access_token_algorithm())

    def verification_key(self, kid: str) -> tuple[str, jwk.JWK] | None:
        """``(algorithm, public key)`` for a published kid; an unknown kid forces one reload."""
        if not KID_PATTERN.fullmatch(kid):
            return None
        self._fresh()
        found = self._public.get(kid)
        if found is None and time.monotonic() - self._loaded_at > 1.0:
            self._fresh(force=True)
            found = self._public.get(kid)
        return found


key_ring = KeyRing()


KEY_LOCK = 7_342_001  # pg_advisory_xact_lock id serializing key creation and rotation


def _generate(algorithm: str) -> jwk.JWK:
    if algorithm == SigningAlgorithm.ES256:
        return jwk.JWK.generate(kty="EC", crv="P-256")
    if algorithm == SigningAlgorithm.RS256:
        return jwk.JWK.generate(kty="RSA", size=2048)
    if algorithm == SigningAlgorithm.EDDSA:
        return jwk.JWK.generate(kty="OKP", crv="Ed25519")
    raise ValueError(f"unsupported signing algorithm {algorithm!r}")


def key_event(key: SigningKey, action: str, actor: Principal, **data: JSONValue) -> None:
    """Audit one step of a key's lifecycle (``key.published``, ``key.activated``,
    ``key.retired``, ``key.removed``) on the platform's chain."""
    event_record(
        organization_id=SYSTEM_ORGANIZATION_ID,
        actor=actor,
        action=action,
        subject_type="signing_key",
        subject_id=key.kid,
        data={"kid": key.kid, "algorithm": key.algorithm, **data},
    )


def create_key(status: str, algorithm: str, *, actor: Principal) -> SigningKey:
    """Generate and publish a key; the private part goes to the secret store before the row
    exists (a secret store that cannot be written leaves nothing behind)."""
    private = _generate(algorithm)
    kid = private.thumbprint()
    secret_store().write(private_key_path(kid), {"jwk": private.export_private()})
    public: dict[str, JSONValue] = private.export_public(as_dict=True)
    public.update(kid=kid, alg=algorithm, use="sig")
    now = timezone.now()
    key = SigningKey.objects.create(
        kid=kid,
        algorithm=algorithm,
        status=status,
        public_jwk=public,
        activated_at=now if status == KeyStatus.CURRENT else None,
    )
    key_event(key, "key.published", actor, status=status)
    if status == KeyStatus.CURRENT:
        key_event(key, "key.activated", actor, replaces=None)
    return key


def key_lock() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [KEY_LOCK])


JWKS_CACHE_KEY = "agentidp:jwks"


def jwks_cache_clear() -> None:
    """Forget the cached JWKS document (after any change to the published keys)."""
    try:
        redis_client().delete(JWKS_CACHE_KEY)
    except RedisError:
        # The cached document expires within AGENTIDP_JWKS_MAX_AGE, which the pre-publication
        # window exceeds twice over (checked at start): no relying party meets an unknown kid.
        logger.warning("JWKS cache not cleared: Redis unavailable")


ENSURE_ACTOR = Principal.system("signing-keys:ensure")


@transaction.atomic
def signing_keys_ensure(*, actor: Principal = ENSURE_ACTOR) -> list[SigningKey]:
    """Every algorithm's current key and published next key, created where missing.

    The first keys of an algorithm sign at once (there is nothing to pre-publish them
    against); every later key is published as ``next`` first. Returns the created keys."""
    key_lock()
    present = set(
        SigningKey.objects.filter(status__in=[KeyStatus.CURRENT, KeyStatus.NEXT]).values_list(
            "algorithm", "status"
        )
    )
    created = [
        create_key(status, algorithm, actor=actor)
        for algorithm in SigningAlgorithm.values
        for status in (KeyStatus.CURRENT, KeyStatus.NEXT)
        if (algorithm, status) not in present
    ]
    if created:
        transaction.on_commit(key_ring.clear)
        transaction.on_commit(jwks_cache_clear)
    return created


def signing_keys_ensure_committed() -> None:
    """Create missing keys in a transaction of their own, committed before we go on.

    Called when a token is requested and a key is missing. A key created inside the request's
    transaction could be cached by this process and then rolled back with the request, leaving
    tokens signed by an unpublished kid; a separate connection commits independently.
    """
    failure: list[BaseException] = []

    def create() -> None:
        try:
            with platform_context(reason="signing-keys:ensure", actor=ENSURE_ACTOR):
                signing_keys_ensure()
        except BaseException as exc:  # re-raised in the calling thread
            failure.append(exc)
        finally:
            connections.close_all()

    worker = threading.Thread(target=create, name="signing-keys-ensure")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    key_ring.clear()


def signing_key_current(algorithm: str | None = None) -> SigningMaterial:
    """The current key for ``algorithm`` (default: the access tokens'), creating missing keys
    (committed at once) if there is none."""
    signing = key_ring.signing(algorithm)
    if signing is None:
        signing_keys_ensure_committed()
        signing = key_ring.signing(algorithm)
        assert signing is not None  # noqa: S101 - signing_keys_ensure_committed just created one
    return signing


class SigningKeyAge(Collector):
    """``agentidp_signing_key_age_seconds``: how long each algorithm's current key has signed,
    read from the database at scrape time (nothing to report while it is unreachable)."""

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "agentidp_signing_key_age_seconds",
            "Seconds since each algorithm's current signing key started signing.",
            labels=["algorithm", "kid"],
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """What registering asks (so it does not collect, reading the database, at start)."""
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        try:
            current = list(
                SigningKey.objects.filter(status=KeyStatus.CURRENT).values_list(
                    "algorithm", "kid", "activated_at"
                )
            )
        except DatabaseError:
            current = []
        now = timezone.now()
        for algorithm, kid, activated_at in current:
            started: dt.datetime = activated_at or now
            family.add_metric([algorithm, kid], (now - started).total_seconds())
        yield family
