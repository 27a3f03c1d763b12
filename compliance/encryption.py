"""Encryption at rest: AES-256-GCM envelope encryption of the secret-bearing columns.

* Each organization has data keys (DEKs): 256-bit AES keys, versioned 1, 2, ..., stored only
  wrapped in ``compliance_datakey``. The newest version encrypts; every version decrypts, so
  rows under an old version stay readable while :func:`rewrap_all` moves them on.
* A data key is wrapped by the key-encryption key (KEK): a Vault / OpenBao Transit key (derived,
  with the organization id as its context) when ``VAULT_ADDR`` is set, else a key held in the
  local development secret store. The KEK never leaves Vault; Transit's own ``rewrap`` moves a
  wrapped data key to the KEK's newest version without exposing it.
* A ciphertext is ``enc:A256GCM:<data key version>:<base64url(nonce || ciphertext || tag)>``:
  algorithm and key version travel with every value. The associated data binds it to its
  organization, table, column and row, so a value copied to another row, column or
  organization fails to decrypt instead of yielding another row's secret.
* Decrypted data keys are kept in process memory for an hour (Vault's recommended envelope
  pattern): a warm decryption is one AES-GCM operation, no round trip.

Failures are :class:`DecryptionFailed` (tampered, foreign, unknown version: logged, counted and
audited) or the secret store's own :class:`~agentidp.secrets.SecretStoreUnavailable`.
"""

import base64
import binascii
import logging
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.apps import apps
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from hvac import exceptions as hvac_errors
from prometheus_client import Counter

from agentidp.errors import DomainError
from agentidp.events import event_record_after_request
from agentidp.lru import BoundedLRU
from agentidp.principals import Principal
from agentidp.secrets import (
    SecretData,
    SecretNotFound,
    SecretStore,
    SecretStoreError,
    VaultSecretStore,
    platform_path,
    secret_store,
)
from agentidp.tenancy import tenant_context
from compliance.jobs import job_recorded

logger = logging.getLogger("agentidp.encryption")

ALGORITHM = "A256GCM"
PREFIX = f"enc:{ALGORITHM}:"
NONCE_BYTES = 12
LOCAL_KEK_PATH = platform_path("data-kek")
SYSTEM = Principal.system("encryption")

DECRYPTION_FAILURES = Counter(
    "agentidp_decryption_failures_total",
    "Stored ciphertexts that failed to decrypt (tampered, foreign or unknown key version).",
    ["column"],
)


class DecryptionFailed(DomainError):
    """A stored ciphertext that does not decrypt: tampered with, moved from another row or
    organization, or under a key version that does not exist. Never answered as plaintext."""

    status = 503
    code = "stored_data_unreadable"
    title = "Stored data unreadable"


@dataclass(frozen=True)
class EncryptedColumn:
    """A column holding ciphertext: ``model`` (``app_label.Model``) and field name."""

    model: str
    field: str

    @property
    def table(self) -> str:
        return str(apps.get_model(self.model)._meta.db_table)

    @property
    def column(self) -> str:
        return str(apps.get_model(self.model)._meta.get_field(self.field).column)


# Every encrypted column; rewrap walks them all. Each table has an ``id`` and an
# ``organization_id``; an empty value means "none" and is never encrypted.
ENCRYPTED_COLUMNS = (
    EncryptedColumn("credentials.ClientSecret", "digest_ciphertext"),
    EncryptedColumn("webhooks.WebhookSubscription", "secret_ref"),
    EncryptedColumn("webhooks.WebhookSubscription", "previous_secret_ref"),
    EncryptedColumn("did.AgentDidKey", "private_key_ref"),
)


def associated_data(organization_id: uuid.UUID, table: str, column: str, row_id: object) -> bytes:
    return f"agentidp:{organization_id}:{table}.{column}:{row_id}".encode()


# --- key-encryption keys ---------------------------------------------------------------------


class KeyEncryptionKey(ABC):
    """Wraps and unwraps data keys; versioned, the newest wrapping."""

    name: str

    @abstractmethod
    def wrap(self, organization_id: uuid.UUID, key: bytes) -> str: ...

    @abstractmethod
    def unwrap(self, organization_id: uuid.UUID, wrapped: str) -> bytes: ...

    @abstractmethod
    def rewrap(self, organization_id: uuid.UUID, wrapped: str) -> str:
        """``wrapped`` under the newest version (the data key itself unchanged)."""

    @abstractmethod
    def latest_version(self) -> int: ...

    @abstractmethod
    def rotate(self) -> int:
        """Add a new version; return it."""

    @staticmethod
    def version_of(wrapped: str) -> int:
        """The KEK version of a wrapped key: ``<scheme>:v<N>:...``."""
        try:
            return int(wrapped.split(":")[1].removeprefix("v"))
        except (IndexError, ValueError):
            return 0


class TransitKey(KeyEncryptionKey):
    """A Vault / OpenBao Transit key (``aes256-gcm96``, derived: each organization's data keys
    are wrapped under a key derived with its id as context)."""

    name = "transit"

    def __init__(self, store: VaultSecretStore, *, mount: str, key: str) -> None:
        self.store, self.mount, self.key = store, mount, key
        self.transit = store.client.secrets.transit

    def _context(self, organization_id: uuid.UUID) -> str:
        return base64.b64encode(str(organization_id).encode()).decode()

    def _data(self, operation: str, action: Callable[[], object]) -> dict[str, str]:
        response = cast(
            dict[str, dict[str, str]],
            self.store._call(operation, action, f"transit/{self.key}"),
        )
        return response["data"]

    def ensure(self) -> None:
        """Create the Transit key on first use (a no-op when it exists)."""
        try:
            self.store._call(
                "read key", lambda: self.transit.read_key(self.key, mount_point=self.mount)
            )
        except SecretNotFound:
            self.store._call(
                "create key",
                lambda: self.transit.create_key(
                    self.key, derived=True, key_type="aes256-gcm96", mount_point=self.mount
                ),
            )

    def wrap(self, organization_id: uuid.UUID, key: bytes) -> str:
        plaintext = base64.b64encode(key).decode()
        return self._data(
            "encrypt",
            lambda: self.transit.encrypt_data(
                self.key,
                plaintext=plaintext,
                context=self._context(organization_id),
                mount_point=self.mount,
            ),
        )["ciphertext"]

    def unwrap(self, organization_id: uuid.UUID, wrapped: str) -> bytes:
        try:
            data = self._data(
                "decrypt",
                lambda: self.transit.decrypt_data(
                    self.key,
                    ciphertext=wrapped,
                    context=self._context(organization_id),
                    mount_point=self.mount,
                ),
            )
        except SecretStoreError as exc:
            if isinstance(exc.__cause__, hvac_errors.InvalidRequest):
                raise DecryptionFailed("A data key does not unwrap under its KEK.") from exc
            raise
        return base64.b64decode(data["plaintext"])

    def rewrap(self, organization_id: uuid.UUID, wrapped: str) -> str:
        return self._data(
            "rewrap",
            lambda: self.transit.rewrap_data(
                self.key,
                ciphertext=wrapped,
                context=self._context(organization_id),
                mount_point=self.mount,
            ),
        )["ciphertext"]

    def latest_version(self) -> int:
        data = self._data("read key", lambda: self.transit.read_key(self.key, self.mount))
        return int(cast(dict[str, int], data)["latest_version"])

    def rotate(self) -> int:
        self.store._call(
            "rotate key", lambda: self.transit.rotate_key(self.key, mount_point=self.mount)
        )
        return self.latest_version()


def _first_local_key() -> SecretData:
    return {"latest": "1", "v1": base64.b64encode(AESGCM.generate_key(256)).decode()}


class LocalKey(KeyEncryptionKey):
    """Development only: versioned AES-256 keys kept in the local secret store (itself an
    encrypted file whose key lives outside the database)."""

    name = "local"

    def _versions(self) -> SecretData:
        return secret_store().read_or_create(LOCAL_KEK_PATH, _first_local_key)

    def _aead(self, version: int) -> AESGCM:
        found = self._versions().get(f"v{version}")
        if found is None:
            raise DecryptionFailed(f"No key-encryption key version {version}.")
        return AESGCM(base64.b64decode(found))

    def wrap(self, organization_id: uuid.UUID, key: bytes) -> str:
        version = self.latest_version()
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead(version).encrypt(nonce, key, str(organization_id).encode())
        return f"local:v{version}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def unwrap(self, organization_id: uuid.UUID, wrapped: str) -> bytes:
        try:
            blob = base64.urlsafe_b64decode(wrapped.split(":", 2)[2])
            return self._aead(self.version_of(wrapped)).decrypt(
                blob[:NONCE_BYTES], blob[NONCE_BYTES:], str(organization_id).encode()
            )
        except (IndexError, ValueError, binascii.Error, InvalidTag) as exc:
            raise DecryptionFailed("A data key does not unwrap under its KEK.") from exc

    def rewrap(self, organization_id: uuid.UUID, wrapped: str) -> str:
        return self.wrap(organization_id, self.unwrap(organization_id, wrapped))

    def latest_version(self) -> int:
        return int(self._versions()["latest"])

    def rotate(self) -> int:
        versions = dict(self._versions())
        latest = int(versions["latest"]) + 1
        versions[f"v{latest}"] = base64.b64encode(AESGCM.generate_key(256)).decode()
        versions["latest"] = str(latest)
        secret_store().write(LOCAL_KEK_PATH, versions)
        return latest


_kek: list[tuple[SecretStore, KeyEncryptionKey]] = []


def key_encryption_key() -> KeyEncryptionKey:
    """Transit when the secret store is Vault, else the local key (built once per store)."""
    store = secret_store()
    if _kek and _kek[0][0] is store:
        return _kek[0][1]
    kek: KeyEncryptionKey
    if isinstance(store, VaultSecretStore):
        transit: dict[str, str] = settings.AGENTIDP["VAULT"]
        kek = TransitKey(store, mount=transit["TRANSIT_MOUNT"], key=transit["TRANSIT_KEY"])
        kek.ensure()
    else:
        kek = LocalKey()
    _kek[:] = [(store, kek)]
    return kek


# --- data keys -------------------------------------------------------------------------------

# Unwrapped data keys by (organization, version): an hour, then unwrapped again.
_data_keys: BoundedLRU[tuple[uuid.UUID, int], AESGCM] = BoundedLRU(max_entries=10_000, max_age=3600)


def data_key_create(organization_id: uuid.UUID, *, using: str = DEFAULT_DB_ALIAS) -> int:
    """A new newest data key for the organization (in its context); returns its version."""
    key = AESGCM.generate_key(bit_length=256)
    wrapped = key_encryption_key().wrap(organization_id, key)
    with connections[using].cursor() as cursor:
        cursor.execute(
            """INSERT INTO compliance_datakey (organization_id, version, wrapped, created_at)
               SELECT %s, coalesce(max(version), 0) + 1, %s, now()
                 FROM compliance_datakey WHERE organization_id = %s
               RETURNING version""",
            [organization_id, wrapped, organization_id],
        )
        version = int(cursor.fetchone()[0])
    _data_keys.put((organization_id, version), AESGCM(key))
    return version


def _max_version(organization_id: uuid.UUID, using: str) -> int:
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(max(version), 0) FROM compliance_datakey WHERE organization_id = %s",
            [organization_id],
        )
        return int(cursor.fetchone()[0])


def data_key_newest(organization_id: uuid.UUID, *, using: str = DEFAULT_DB_ALIAS) -> int:
    """The organization's newest data key version, created on its first encryption (two first
    encryptions racing take turns on an advisory lock, so one key is made)."""
    newest = _max_version(organization_id, using)
    if newest:
        return newest
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"dek:{organization_id}"])
    return _max_version(organization_id, using) or data_key_create(organization_id, using=using)


def _data_key(organization_id: uuid.UUID, version: int, using: str) -> AESGCM:
    found = _data_keys.get((organization_id, version))
    if found is not None:
        return found
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT wrapped FROM compliance_datakey WHERE organization_id = %s AND version = %s",
            [organization_id, version],
        )
        row = cursor.fetchone()
    if row is None:
        raise DecryptionFailed(f"The organization has no data key version {version}.")
    found = AESGCM(key_encryption_key().unwrap(organization_id, str(row[0])))
    _data_keys.put((organization_id, version), found)
    return found


def data_keys_forget() -> None:
    """Drop the unwrapped data keys this process holds (tests; after a KEK compromise)."""
    _data_keys.clear()


# --- values ----------------------------------------------------------------------------------


def encrypt(
    plaintext: str,
    *,
    organization_id: uuid.UUID,
    column: EncryptedColumn,
    row_id: object,
    using: str = DEFAULT_DB_ALIAS,
) -> str:
    """``plaintext`` sealed under the organization's newest data key, bound to its row."""
    if plaintext == "":
        return ""
    version = data_key_newest(organization_id, using=using)
    nonce = os.urandom(NONCE_BYTES)
    aad = associated_data(organization_id, column.table, column.column, row_id)
    sealed = _data_key(organization_id, version, using).encrypt(nonce, plaintext.encode(), aad)
    return f"{PREFIX}{version}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"


def key_version(ciphertext: str) -> int:
    """The data key version a ciphertext names (0: not one of ours)."""
    if not ciphertext.startswith(PREFIX):
        return 0
    version = ciphertext[len(PREFIX) :].partition(":")[0]
    return int(version) if version.isdigit() else 0


def decrypt(
    ciphertext: str,
    *,
    organization_id: uuid.UUID,
    column: EncryptedColumn,
    row_id: object,
    using: str = DEFAULT_DB_ALIAS,
) -> str:
    """The plaintext of a value :func:`encrypt` made for this very row, or
    :class:`DecryptionFailed` (logged, counted and audited)."""
    if ciphertext == "":
        return ""
    try:
        return _opened(ciphertext, organization_id, column, row_id, using)
    except DecryptionFailed as failure:
        _record_failure(failure, organization_id, column, row_id)
        raise


def _opened(
    ciphertext: str, organization_id: uuid.UUID, column: EncryptedColumn, row_id: object, using: str
) -> str:
    version = key_version(ciphertext)
    if version == 0:
        raise DecryptionFailed("A stored value is not an AgentIdP ciphertext.")
    try:
        blob = base64.urlsafe_b64decode(ciphertext[len(PREFIX) :].partition(":")[2])
    except (binascii.Error, ValueError) as exc:
        raise DecryptionFailed("A stored value is not valid base64url.") from exc
    aad = associated_data(organization_id, column.table, column.column, row_id)
    aead = _data_key(organization_id, version, using)
    try:
        return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad).decode()
    except (InvalidTag, ValueError, UnicodeDecodeError) as exc:
        raise DecryptionFailed("A stored value failed authentication.") from exc


def _record_failure(
    failure: DecryptionFailed, organization_id: uuid.UUID, column: EncryptedColumn, row_id: object
) -> None:
    where = f"{column.table}.{column.column}"
    DECRYPTION_FAILURES.labels(column=where).inc()
    logger.error(
        "decryption failed",
        extra={"organization_id": str(organization_id), "column": where, "row": str(row_id),
               "reason": failure.detail},
    )  # fmt: skip
    event_record_after_request(
        organization_id=organization_id,
        actor=SYSTEM,
        action="encryption.decrypt_failed",
        subject_type=column.model,
        subject_id=str(row_id),
        data={"column": where, "reason": failure.detail},
    )


# --- rewrap: everything under the newest keys ------------------------------------------------


@dataclass
class RewrapResult:
    """What one organization's rewrap did."""

    data_keys_created: int = 0
    data_keys_rewrapped: int = 0
    values_reencrypted: int = 0
    values_unreadable: int = 0

    def add(self, other: "RewrapResult") -> None:
        self.data_keys_created += other.data_keys_created
        self.data_keys_rewrapped += other.data_keys_rewrapped
        self.values_reencrypted += other.values_reencrypted
        self.values_unreadable += other.values_unreadable

    def as_document(self) -> dict[str, int]:
        return {
            "data_keys_created": self.data_keys_created,
            "data_keys_rewrapped": self.data_keys_rewrapped,
            "values_reencrypted": self.values_reencrypted,
            "values_unreadable": self.values_unreadable,
        }


def _data_key_due(organization_id: uuid.UUID, max_age_days: int) -> bool:
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(
            "SELECT max(created_at) < now() - %s * interval '1 day' FROM compliance_datakey"
            " WHERE organization_id = %s",
            [max_age_days, organization_id],
        )
        return bool(cursor.fetchone()[0])


def _data_keys_rewrap(organization_id: uuid.UUID) -> int:
    """Move the organization's wrapped data keys to the KEK's newest version (Transit's
    rewrap: the data keys are never exposed)."""
    kek = key_encryption_key()
    latest, moved = kek.latest_version(), 0
    with tenant_context(organization_id), connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(
            "SELECT id, wrapped FROM compliance_datakey WHERE organization_id = %s FOR UPDATE",
            [organization_id],
        )
        for key_id, wrapped in cursor.fetchall():
            if kek.version_of(str(wrapped)) >= latest:
                continue
            cursor.execute(
                "UPDATE compliance_datakey SET wrapped = %s, rewrapped_at = now() WHERE id = %s",
                [kek.rewrap(organization_id, str(wrapped)), key_id],
            )
            moved += 1
    return moved


def _column_reencrypt(
    organization_id: uuid.UUID, column: EncryptedColumn, newest: int, batch: int
) -> tuple[int, int]:
    """Re-encrypt the column's values under older data keys, ``batch`` rows per transaction
    (each row locked FOR NO KEY UPDATE while it is rewritten, which the token endpoint's FOR
    KEY SHARE never waits on; rows another transaction holds are left for the next run).
    Returns (re-encrypted, unreadable)."""
    table, name = column.table, column.column
    current = f"{PREFIX}{newest}:%"
    done = unreadable = 0
    after: str = ""
    select = (
        f'SELECT id::text, "{name}" FROM "{table}"'  # noqa: S608 - names from ENCRYPTED_COLUMNS
        f' WHERE organization_id = %s AND "{name}" <> \'\' AND "{name}" NOT LIKE %s'
        " AND id::text > %s ORDER BY id::text LIMIT %s FOR NO KEY UPDATE SKIP LOCKED"
    )
    update = f'UPDATE "{table}" SET "{name}" = %s WHERE id::text = %s'  # noqa: S608
    while True:
        with tenant_context(organization_id), connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute(select, [organization_id, current, after, batch])
            rows = cursor.fetchall()
            for row_id, sealed in rows:
                try:
                    plain = decrypt(
                        str(sealed), organization_id=organization_id, column=column, row_id=row_id
                    )
                except DecryptionFailed:
                    unreadable += 1
                    continue
                resealed = encrypt(
                    plain, organization_id=organization_id, column=column, row_id=row_id
                )
                cursor.execute(update, [resealed, row_id])
                done += 1
        if len(rows) < batch:
            return done, unreadable
        after = str(rows[-1][0])


def rewrap_organization(
    organization_id: uuid.UUID, *, rotate: bool = False, batch: int = 500
) -> RewrapResult:
    """Bring one organization's data at rest under the newest keys: a new data key when
    ``rotate`` or when the newest is older than ``DATA_KEY_ROTATION_DAYS``; its data keys
    rewrapped under the KEK's newest version; every encrypted value re-encrypted under the
    newest data key. Reads keep working throughout (old versions still decrypt). A secret store
    that fails (sealed, unreachable) stops it with the current batch rolled back."""
    result = RewrapResult()
    max_age = int(settings.AGENTIDP["DATA_KEY_ROTATION_DAYS"])
    with tenant_context(organization_id):
        if rotate or _data_key_due(organization_id, max_age):
            data_key_create(organization_id)
            result.data_keys_created = 1
        newest = _max_version(organization_id, DEFAULT_DB_ALIAS)
    result.data_keys_rewrapped = _data_keys_rewrap(organization_id)
    if newest:
        for column in ENCRYPTED_COLUMNS:
            done, unreadable = _column_reencrypt(organization_id, column, newest, batch)
            result.values_reencrypted += done
            result.values_unreadable += unreadable
    return result


def data_rewrap_recorded(organization_id: uuid.UUID, *, rotate: bool = False) -> RewrapResult:
    """:func:`rewrap_organization`, recorded as a ``rewrap`` job run (failed when a value was
    unreadable or the secret store failed)."""
    with job_recorded("rewrap", organization_id=organization_id) as run:
        result = rewrap_organization(organization_id, rotate=rotate)
        run.detail.update(result.as_document())
        run.failed = result.values_unreadable > 0
    return result
