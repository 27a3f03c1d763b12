"""The in-process key ring: parsed signing and verification keys, cached.

Parsing a key costs milliseconds, so each process keeps the parsed JWKs: the current signing
key is re-checked against the database every few seconds (so a rotation done elsewhere is
picked up), private keys are read from the secret store once per kid.
"""

import re
import threading
import time
from dataclasses import dataclass

from django.utils import timezone
from jwcrypto import jwk

from agentidp.secrets import platform_path, secret_store
from oidc.choices import KeyStatus
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
