"""Signing keys: creating the first ones, and the in-process key ring of parsed keys.

Parsing a key costs milliseconds, so each process keeps the parsed JWKs: the current signing
key is re-checked against the database every few seconds (so a rotation done elsewhere is
picked up), private keys are read from the secret store once per kid.
"""

import re
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, connections, transaction
from django.utils import timezone
from jwcrypto import jwk

from agentidp.errors import JSONValue
from agentidp.secrets import platform_path, secret_store
from oidc.choices import KeyStatus, SigningAlgorithm
from oidc.models import SigningKey

KID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
REFRESH_SECONDS = 10.0


def private_key_path(kid: str) -> str:
    return platform_path(f"signing-keys/{kid}")


@dataclass(frozen=True)
class SigningMaterial:
    """What the token generator needs: the kid, its algorithm and the parsed private key."""

    kid: str
    algorithm: str
    key: jwk.JWK


class KeyRing:
    """Thread-safe cache of the current signing key and the published verification keys."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._signing: SigningMaterial | None = None
        self._private: dict[str, jwk.JWK] = {}
        self._public: dict[str, tuple[str, jwk.JWK]] = {}
        self._loaded_at = 0.0

    def clear(self) -> None:
        with self._lock:
            self._signing, self._private, self._public, self._loaded_at = None, {}, {}, 0.0

    def _refresh(self) -> None:
        now = timezone.now()
        published = SigningKey.objects.exclude(status=KeyStatus.RETIRED).union(
            SigningKey.objects.filter(status=KeyStatus.RETIRED, verify_until__gt=now)
        )
        public: dict[str, tuple[str, jwk.JWK]] = {}
        signing: SigningMaterial | None = None
        for key in published:
            public[key.kid] = (key.algorithm, jwk.JWK(**key.public_jwk))
            if key.status == KeyStatus.CURRENT:
                private = self._private.get(key.kid)
                if private is None:
                    stored = secret_store().read(private_key_path(key.kid))
                    private = jwk.JWK.from_json(stored["jwk"])
                    self._private[key.kid] = private
                signing = SigningMaterial(kid=key.kid, algorithm=key.algorithm, key=private)
        self._public, self._signing, self._loaded_at = public, signing, time.monotonic()

    def _fresh(self, force: bool = False) -> None:
        if force or time.monotonic() - self._loaded_at > REFRESH_SECONDS:
            with self._lock:
                self._refresh()

    def signing(self) -> SigningMaterial | None:
        """The current signing key, or None if no key has been created yet."""
        self._fresh()
        return self._signing

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


def create_key(status: str, algorithm: str) -> SigningKey:
    """Generate a key; the private part goes to the secret store before the row exists."""
    private = _generate(algorithm)
    kid = private.thumbprint()
    secret_store().write(private_key_path(kid), {"jwk": private.export_private()})
    public: dict[str, JSONValue] = private.export_public(as_dict=True)
    public.update(kid=kid, alg=algorithm, use="sig")
    now = timezone.now()
    return SigningKey.objects.create(
        kid=kid,
        algorithm=algorithm,
        status=status,
        public_jwk=public,
        activated_at=now if status == KeyStatus.CURRENT else None,
    )


def key_lock() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [KEY_LOCK])


@transaction.atomic
def signing_key_ensure() -> SigningKey:
    """The current signing key, created (with a published next key) if there is none."""
    key_lock()
    current = SigningKey.objects.filter(status=KeyStatus.CURRENT).first()
    if current is None:
        algorithm = str(settings.AGENTIDP["SIGNING_ALGORITHM"])
        current = create_key(KeyStatus.CURRENT, algorithm)
        create_key(KeyStatus.NEXT, algorithm)
    transaction.on_commit(key_ring.clear)
    return current


@transaction.atomic
def signing_key_ensure_committed() -> None:
    """Create the first keys in a transaction of their own, committed before we go on.

    Called when a token is requested and no key exists yet. A key created inside the request's
    transaction could be cached by this process and then rolled back with the request, leaving
    tokens signed by an unpublished kid; a separate connection commits independently.
    """
    failure: list[BaseException] = []

    def create() -> None:
        try:
            signing_key_ensure()
        except BaseException as exc:  # re-raised in the calling thread
            failure.append(exc)
        finally:
            connections.close_all()

    worker = threading.Thread(target=create, name="signing-key-ensure")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    key_ring.clear()


def signing_key_current() -> SigningMaterial:
    """The current signing key, creating the first keys (committed at once) if there are none."""
    signing = key_ring.signing()
    if signing is None:
        signing_key_ensure_committed()
        signing = key_ring.signing()
        assert signing is not None  # noqa: S101 - signing_key_ensure_committed just created one
    return signing
