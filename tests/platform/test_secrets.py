"""The secret store against a real OpenBao server, and the local development store."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest

from agentidp.secrets import (
    LocalSecretStore,
    SecretFactory,
    SecretNotFound,
    SecretStoreError,
    SecretStoreForbidden,
    SecretStoreUnavailable,
    VaultSecretStore,
    secret_store,
)
from tests.openbao import BaoServer, start_bao

SECRET = "s3cr3t-value-that-must-never-leak"


def _store(bao: BaoServer, token: str = "") -> VaultSecretStore:
    return VaultSecretStore(
        url=bao.addr, mount="secret", prefix="unit", token=token or bao.root_token
    )


def test_the_application_store_is_vault_in_tests(bao: BaoServer) -> None:
    store = secret_store()
    assert isinstance(store, VaultSecretStore)
    store.write("platform/probe", {"value": "x"})
    raw = hvac.Client(url=bao.addr, token=bao.root_token).secrets.kv.v2.read_secret_version(
        path="agentidp-tests/platform/probe", mount_point="secret", raise_on_deleted_version=True
    )
    assert raw["data"]["data"] == {"value": "x"}


def test_write_read_rotate_delete(bao: BaoServer) -> None:
    store = _store(bao)
    store.write("orgs/a/key", {"private": SECRET})
    assert store.read("orgs/a/key") == {"private": SECRET}
    store.write("orgs/a/key", {"private": "rotated"})  # a new KV version replaces the old
    assert store.read("orgs/a/key") == {"private": "rotated"}
    store.delete("orgs/a/key")
    with pytest.raises(SecretNotFound):
        store.read("orgs/a/key")


def test_read_or_create_creates_once(bao: BaoServer) -> None:
    store = _store(bao)
    first = store.read_or_create("platform/hmac", SecretFactory(nbytes=32))
    assert store.read_or_create("platform/hmac", SecretFactory(nbytes=32)) == first
    assert len(first["value"]) >= 43


def test_unreachable_vault_is_a_clear_error() -> None:
    store = VaultSecretStore(url="http://127.0.0.1:9", mount="secret", token=SECRET, timeout=1)
    with pytest.raises(SecretStoreUnavailable, match="unreachable") as caught:
        store.read("orgs/a/key")
    assert SECRET not in str(caught.value)


def test_token_without_permission_is_refused_and_writes_nothing(bao: BaoServer) -> None:
    root = hvac.Client(url=bao.addr, token=bao.root_token)
    root.sys.create_or_update_policy(
        name="read-elsewhere",
        policy='path "secret/data/elsewhere/*" { capabilities = ["read"] }',
    )
    limited = root.auth.token.create(policies=["read-elsewhere"], ttl="10m")["auth"]["client_token"]
    store = _store(bao, token=limited)
    with pytest.raises(SecretStoreForbidden, match="permission denied") as caught:
        store.write("orgs/b/key", {"private": SECRET})
    assert SECRET not in str(caught.value) and limited not in str(caught.value)
    with pytest.raises(SecretNotFound):
        _store(bao).read("orgs/b/key")


def test_approle_login(bao: BaoServer) -> None:
    root = hvac.Client(url=bao.addr, token=bao.root_token)
    root.sys.enable_auth_method("approle")
    root.sys.create_or_update_policy(
        name="agentidp",
        policy='path "secret/*" { capabilities = ["create", "read", "update", "delete"] }',
    )
    root.auth.approle.create_or_update_approle("agentidp", token_policies=["agentidp"])
    role_id = root.auth.approle.read_role_id("agentidp")["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("agentidp")["data"]["secret_id"]
    store = VaultSecretStore(
        url=bao.addr, mount="secret", prefix="approle", role_id=role_id, secret_id=secret_id
    )
    store.write("platform/x", {"value": "1"})
    assert store.read("platform/x") == {"value": "1"}
    with pytest.raises(SecretStoreForbidden):
        VaultSecretStore(url=bao.addr, mount="secret", role_id=role_id, secret_id="wrong")


@pytest.fixture
def sealable_bao(tmp_path: Path) -> Iterator[BaoServer]:
    server = start_bao(tmp_path)
    yield server
    server.stop()


def test_sealed_vault_is_a_clear_error_and_nothing_half_written(sealable_bao: BaoServer) -> None:
    store = _store(sealable_bao)
    store.write("orgs/c/key", {"private": "before"})
    hvac.Client(url=sealable_bao.addr, token=sealable_bao.root_token).sys.seal()
    with pytest.raises(SecretStoreUnavailable, match="sealed"):
        store.read("orgs/c/key")
    with pytest.raises(SecretStoreUnavailable, match="sealed") as caught:
        store.write("orgs/c/key", {"private": SECRET})
    assert SECRET not in str(caught.value)
    hvac.Client(url=sealable_bao.addr).sys.submit_unseal_key(sealable_bao.unseal_key)
    assert store.read("orgs/c/key") == {"private": "before"}


def test_local_store_encrypts_at_rest(tmp_path: Path) -> None:
    store = LocalSecretStore(path=tmp_path / "s.enc", key_path=tmp_path / "keys" / "s.key")
    store.write("orgs/a/key", {"private": SECRET})
    assert store.read("orgs/a/key") == {"private": SECRET}
    assert SECRET.encode() not in (tmp_path / "s.enc").read_bytes()
    assert oct((tmp_path / "keys" / "s.key").stat().st_mode & 0o777) == "0o600"
    reopened = LocalSecretStore(path=tmp_path / "s.enc", key_path=tmp_path / "keys" / "s.key")
    assert reopened.read("orgs/a/key") == {"private": SECRET}
    store.delete("orgs/a/key")
    with pytest.raises(SecretNotFound):
        reopened.read("orgs/a/key")


WRITER = """
import sys
from pathlib import Path
from agentidp.secrets import LocalSecretStore
store = LocalSecretStore(path=Path(sys.argv[1]), key_path=Path(sys.argv[2]))
for n in range(40):
    store.write(f"writer-{sys.argv[3]}/{n}", {"n": str(n)})
    store.read(f"writer-{sys.argv[3]}/{n}")
"""


def test_local_store_keeps_every_write_of_processes_writing_at_once(tmp_path: Path) -> None:
    """Web workers, Celery and commands each open the store: four processes writing at once
    lose no write and never leave a file that does not decrypt."""
    path, key_path = tmp_path / "s.enc", tmp_path / "s.key"
    LocalSecretStore(path=path, key_path=key_path).write("first", {"v": "1"})
    writers = [
        subprocess.Popen(  # noqa: S603 - our own code
            [sys.executable, "-c", WRITER, str(path), str(key_path), str(n)],
            stderr=subprocess.PIPE,
        )
        for n in range(4)
    ]
    failures = [w.communicate(timeout=120)[1].decode() for w in writers if w.wait(120) != 0]
    assert not failures, failures[0][-2000:]
    store = LocalSecretStore(path=path, key_path=key_path)
    for n in range(4):
        for m in range(40):
            assert store.read(f"writer-{n}/{m}") == {"n": str(m)}, (n, m)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".s.enc.lock", "s.enc", "s.key"]


def test_local_store_with_the_wrong_key_fails_cleanly(tmp_path: Path) -> None:
    LocalSecretStore(path=tmp_path / "s.enc", key_path=tmp_path / "a.key").write("x", {"v": SECRET})
    other = LocalSecretStore(path=tmp_path / "s.enc", key_path=tmp_path / "b.key")
    with pytest.raises(SecretStoreError, match="cannot be decrypted") as caught:
        other.read("x")
    assert SECRET not in str(caught.value)


def test_app_refuses_to_start_with_local_store_in_production() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"VAULT_ADDR", "AGENTIDP_ALLOW_LOCAL_SECRETS"}
    }
    env.update(DEBUG="0", SECRET_KEY="x", DJANGO_SETTINGS_MODULE="agentidp.settings")
    command = [sys.executable, "-c", "import django; django.setup()"]
    refused = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    assert refused.returncode != 0
    assert "local secret store is for development only" in refused.stderr
    env["AGENTIDP_ALLOW_LOCAL_SECRETS"] = "1"
    allowed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    assert allowed.returncode == 0, allowed.stderr
