"""The secret store: where key material and server secrets live, never in the database.

Two backends behind one interface:

* :class:`VaultSecretStore`: HashiCorp Vault / OpenBao KV v2 through ``hvac``, token or AppRole
  login, one path prefix per organization (``orgs/<id>/...``) and one for the platform.
* :class:`LocalSecretStore`: for development only; an AES-256-GCM encrypted file whose key file
  lives outside the database. Refused when ``DEBUG`` is off unless explicitly allowed.

Every failure is a :class:`SecretStoreError` whose message names the operation and the path,
never a secret value.
"""

import base64
import fcntl
import json
import os
import secrets
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import cast

import hvac
import requests
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from hvac import exceptions as hvac_errors

SecretData = dict[str, str]


class SecretStoreError(RuntimeError):
    """The secret store could not complete an operation (message holds no secret)."""


class SecretNotFound(SecretStoreError):
    """No secret at that path."""


class SecretStoreUnavailable(SecretStoreError):
    """The store is unreachable or sealed."""


class SecretStoreForbidden(SecretStoreError):
    """The store refused the credentials for this path."""


def platform_path(name: str) -> str:
    """Where a deployment-wide secret ``name`` lives."""
    return f"platform/{name}"


class SecretStore(ABC):
    """Read, write (a new version replaces the old), and delete secrets by path."""

    @abstractmethod
    def read(self, path: str) -> SecretData: ...

    @abstractmethod
    def write(self, path: str, data: SecretData) -> None: ...

    @abstractmethod
    def delete(self, path: str) -> None: ...

    def token_renew(self) -> dict[str, str | int | bool]:
        """Renew the store's login lease when it has one; what was found."""
        return {"store": "local", "renewable": False, "ttl_seconds": 0}

    def read_or_create(self, path: str, make: Callable[[], SecretData]) -> SecretData:
        """Read ``path``; on first use store ``make()`` there and return it."""
        try:
            return self.read(path)
        except SecretNotFound:
            data = make()
            self.write(path, data)
            return self.read(path)


class SecretFactory:
    """Makes a fresh secret value: ``{field: url-safe random of nbytes}``."""

    def __init__(self, field: str = "value", nbytes: int = 32) -> None:
        self.field, self.nbytes = field, nbytes

    def __call__(self) -> SecretData:
        return {self.field: secrets.token_urlsafe(self.nbytes)}


class VaultSecretStore(SecretStore):
    """KV v2 at ``mount`` through hvac; logs in with a token or AppRole."""

    def __init__(
        self,
        *,
        url: str,
        mount: str,
        token: str = "",
        role_id: str = "",
        secret_id: str = "",
        prefix: str = "agentidp",
        timeout: float = 5.0,
    ) -> None:
        self.mount, self.prefix = mount, prefix.strip("/")
        self.client = hvac.Client(url=url, timeout=timeout)
        if token:
            self.client.token = token
        elif role_id and secret_id:
            self._call("login", lambda: self.client.auth.approle.login(role_id, secret_id))
        else:
            raise ImproperlyConfigured("Vault needs VAULT_TOKEN or VAULT_ROLE_ID/VAULT_SECRET_ID")

    def _full(self, path: str) -> str:
        return f"{self.prefix}/{path.strip('/')}" if self.prefix else path.strip("/")

    def _call(self, operation: str, action: Callable[[], object], path: str = "") -> object:
        where = f" at {path!r}" if path else ""
        try:
            return action()
        except hvac_errors.InvalidPath as exc:
            raise SecretNotFound(f"no secret{where}") from exc
        except hvac_errors.InvalidRequest as exc:
            if operation == "login":
                raise SecretStoreForbidden("Vault refused login: invalid credentials") from exc
            raise SecretStoreError(f"Vault rejected {operation}{where} as invalid") from exc
        except hvac_errors.Forbidden as exc:
            raise SecretStoreForbidden(
                f"Vault refused {operation}{where}: permission denied"
            ) from exc
        except hvac_errors.VaultDown as exc:
            raise SecretStoreUnavailable(f"Vault is sealed; {operation}{where} failed") from exc
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise SecretStoreUnavailable(
                f"Vault is unreachable; {operation}{where} failed"
            ) from exc
        except hvac_errors.VaultError as exc:
            raise SecretStoreError(
                f"Vault {operation}{where} failed ({type(exc).__name__})"
            ) from exc

    def token_renew(self) -> dict[str, str | int | bool]:
        """Renew this client's Vault token when it is renewable (a root or periodic token
        without a TTL needs none); its remaining TTL afterwards."""
        looked = cast(dict[str, dict[str, object]], self._call(
            "token lookup", lambda: self.client.auth.token.lookup_self()
        ))["data"]  # fmt: skip
        renewable = bool(looked.get("renewable"))
        if renewable:
            renewed = cast(dict[str, dict[str, object]], self._call(
                "token renew", lambda: self.client.auth.token.renew_self()
            ))["auth"]  # fmt: skip
            ttl = int(cast(int, renewed.get("lease_duration", 0)))
        else:
            ttl = int(cast(int, looked.get("ttl", 0)))
        return {"store": "vault", "renewable": renewable, "ttl_seconds": ttl}

    def read(self, path: str) -> SecretData:
        response = self._call(
            "read",
            lambda: self.client.secrets.kv.v2.read_secret_version(
                path=self._full(path), mount_point=self.mount, raise_on_deleted_version=True
            ),
            path,
        )
        data = cast(dict[str, dict[str, dict[str, str]]], response)["data"]["data"]
        return {str(k): str(v) for k, v in data.items()}

    def write(self, path: str, data: SecretData) -> None:
        self._call(
            "write",
            lambda: self.client.secrets.kv.v2.create_or_update_secret(
                path=self._full(path), secret=dict(data), mount_point=self.mount
            ),
            path,
        )

    def delete(self, path: str) -> None:
        self._call(
            "delete",
            lambda: self.client.secrets.kv.v2.delete_metadata_and_all_versions(
                path=self._full(path), mount_point=self.mount
            ),
            path,
        )


class LocalSecretStore(SecretStore):
    """Development-only store: one AES-256-GCM encrypted JSON file.

    The 256-bit key sits in its own file (mode 0600) outside the database; each write
    re-encrypts the whole file under a fresh nonce and replaces it atomically.
    """

    def __init__(self, *, path: Path, key_path: Path) -> None:
        self.path, self.key_path = path, key_path
        self._lock = threading.Lock()
        self._aead = AESGCM(self._key())

    def _key(self) -> bytes:
        if not self.key_path.exists():
            self.key_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(base64.b64encode(AESGCM.generate_key(bit_length=256)))
        key = base64.b64decode(self.key_path.read_bytes())
        if len(key) != 32:
            raise SecretStoreError(f"local secret key file {self.key_path} is not a 256-bit key")
        return key

    def _load(self) -> dict[str, SecretData]:
        if not self.path.exists():
            return {}
        blob = self.path.read_bytes()
        try:
            plain = self._aead.decrypt(blob[:12], blob[12:], b"agentidp-local-secrets")
        except Exception as exc:  # cryptography raises InvalidTag without detail
            raise SecretStoreError("local secret file cannot be decrypted with its key") from exc
        loaded: dict[str, SecretData] = json.loads(plain)
        return loaded

    def _save(self, content: dict[str, SecretData]) -> None:
        nonce = os.urandom(12)
        blob = nonce + self._aead.encrypt(
            nonce, json.dumps(content).encode(), b"agentidp-local-secrets"
        )
        # A temporary file of this write's own beside the store, then one atomic rename:
        # a reader in any process sees the old file or the new one, whole.
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(blob)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """The store to this process alone while it reads, changes and writes it back: web
        workers, Celery and commands each hold their own, so a thread lock is not enough
        (two writers at once would each drop the other's change)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            fd = os.open(
                self.path.with_name(f".{self.path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600
            )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing releases the lock

    def read(self, path: str) -> SecretData:
        with self._lock:
            content = self._load()
        if path not in content:
            raise SecretNotFound(f"no secret at {path!r}")
        return dict(content[path])

    def write(self, path: str, data: SecretData) -> None:
        with self._writing():
            content = self._load()
            content[path] = dict(data)
            self._save(content)

    def delete(self, path: str) -> None:
        with self._writing():
            content = self._load()
            content.pop(path, None)
            self._save(content)


def local_store_allowed() -> bool:
    """The local store runs in development, or in production only when explicitly allowed."""
    config: dict[str, object] = settings.AGENTIDP
    return bool(settings.DEBUG or config["ALLOW_LOCAL_SECRETS"])


@cache
def secret_store() -> SecretStore:
    """The configured store (Vault when ``VAULT_ADDR`` is set), built once per process."""
    config: dict[str, str] = settings.AGENTIDP["VAULT"]
    if config["ADDR"]:
        return VaultSecretStore(
            url=config["ADDR"],
            mount=config["MOUNT"],
            token=config["TOKEN"],
            role_id=config["ROLE_ID"],
            secret_id=config["SECRET_ID"],
            prefix=config["PREFIX"],
        )
    if not local_store_allowed():
        raise ImproperlyConfigured(
            "VAULT_ADDR is unset and the local secret store is for development only; "
            "set VAULT_ADDR or AGENTIDP_ALLOW_LOCAL_SECRETS=1"
        )
    local: dict[str, str] = settings.AGENTIDP["LOCAL_SECRETS"]
    return LocalSecretStore(path=Path(local["PATH"]), key_path=Path(local["KEY_PATH"]))
