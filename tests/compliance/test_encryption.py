"""Encryption at rest against the real OpenBao: Transit-wrapped data keys, ciphertext seen by
raw SQL, values bound to their row and organization, rewrap under load, a sealed Vault."""

import io
import json
import random
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest
from django.core.management import call_command
from django.db import connection
from rest_framework.test import APIClient

from agentidp.secrets import SecretStoreUnavailable, secret_store
from agentidp.tenancy import tenant_context
from compliance.encryption import (
    ENCRYPTED_COLUMNS,
    DecryptionFailed,
    EncryptedColumn,
    data_key_create,
    data_keys_forget,
    data_rewrap_recorded,
    decrypt,
    encrypt,
    key_version,
    rewrap_organization,
)
from compliance.models import AuditEvent, JobRun
from credentials.services import DIGEST_COLUMN, credential_generate, secret_digest
from did.models import AgentDidKey
from did.services import PRIVATE_KEY_COLUMN, did_key_path
from organizations.models import Organization
from tests.factories import TEST_ACTOR, OrganizationFactory
from tests.oidc.conftest import Credentialed, credentialed, request_token
from tests.openbao import BaoServer, start_bao
from tests.webhooks.conftest import agentidp_override
from webhooks.services import SECRET_COLUMN, secret_path, subscription_create


def _raw(org: Organization, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    """SQL as the application role in the organization's context."""
    with tenant_context(org.id), connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def _digest_row(org: Organization, credential_id: Any) -> tuple[str, str]:
    ((sealed, index),) = _raw(
        org,
        "SELECT digest_ciphertext, digest_index FROM credentials_clientsecret WHERE id = %s",
        [credential_id],
    )
    return str(sealed), str(index)


def _open_digest(org: Organization, credential_id: Any, sealed: str) -> str:
    with tenant_context(org.id):
        return decrypt(sealed, organization_id=org.id, column=DIGEST_COLUMN, row_id=credential_id)


def test_a_credential_digest_is_sealed_by_a_transit_wrapped_key(org: Organization) -> None:
    cred = credentialed(org)
    sealed, index = _digest_row(org, cred.credential_id)
    digest = secret_digest(cred.secret)
    assert sealed.startswith("enc:A256GCM:1:") and key_version(sealed) == 1
    assert digest not in sealed and digest != index and cred.secret not in sealed + index
    ((wrapped,),) = _raw(
        org, "SELECT wrapped FROM compliance_datakey WHERE organization_id = %s", [org.id]
    )
    assert str(wrapped).startswith("vault:v")  # wrapped by OpenBao's Transit engine
    assert _open_digest(org, cred.credential_id, sealed) == digest
    # the whole row, as a direct query shows it, holds neither the digest nor the secret
    (row,) = _raw(org, "SELECT * FROM credentials_clientsecret WHERE id = %s", [cred.credential_id])
    assert digest not in str(row) and cred.secret not in str(row)
    assert request_token(cred).status_code == 200  # the blind index still finds it


@pytest.fixture
def hook_url() -> Iterator[str]:
    restore = agentidp_override(SSRF_ALLOWLIST=["127.0.0.2"])
    yield "https://127.0.0.2/in"
    restore()


def test_secret_store_references_are_never_plain_in_the_database(
    org: Organization, hook_url: str
) -> None:
    with tenant_context(org.id):
        issued = subscription_create(
            actor=TEST_ACTOR, organization_id=org.id, url=hook_url, event_types=["*"]
        )
        path = secret_path(issued.subscription)
        key = AgentDidKey.objects.filter(organization_id=org.id).first()
    rows = _raw(org, "SELECT * FROM webhooks_webhooksubscription", [])
    assert path.startswith(f"orgs/{org.id}/webhooks/") and path not in str(rows)
    assert secret_store().read(path) == {"value": issued.secret}
    if key is None:
        cred = credentialed(org)
        with tenant_context(org.id):
            key = AgentDidKey.objects.get(agent_id=cred.agent.id)
    ((sealed,),) = _raw(org, "SELECT private_key_ref FROM agent_did_keys WHERE id = %s", [key.id])
    reference = did_key_path(org.id, key.kid)
    assert str(sealed).startswith("enc:A256GCM:") and reference not in str(sealed)
    with tenant_context(org.id):
        opened = decrypt(
            str(sealed), organization_id=org.id, column=PRIVATE_KEY_COLUMN, row_id=key.id
        )
    assert opened == reference


@pytest.mark.parametrize("attack", ["tampered", "other_row", "other_org", "unknown_version"])
def test_a_foreign_or_tampered_ciphertext_is_refused_logged_and_audited(
    org: Organization, other_org: Organization, attack: str, caplog: pytest.LogCaptureFixture
) -> None:
    mine, second, foreign = credentialed(org), credentialed(org), credentialed(other_org)
    sealed, _ = _digest_row(org, mine.credential_id)
    target_org, row_id = org, mine.credential_id
    if attack == "tampered":
        blob = bytearray(sealed.encode())
        blob[-5] = ord("A") if blob[-5] != ord("A") else ord("B")
        sealed = blob.decode()
    elif attack == "other_row":
        row_id = second.credential_id  # a value copied onto another row
    elif attack == "other_org":
        sealed, _ = _digest_row(other_org, foreign.credential_id)  # another tenant's value
        row_id = foreign.credential_id
    else:
        sealed = sealed.replace("enc:A256GCM:1:", "enc:A256GCM:9:")
    with tenant_context(target_org.id):
        with pytest.raises(DecryptionFailed) as caught:
            decrypt(sealed, organization_id=target_org.id, column=DIGEST_COLUMN, row_id=row_id)
    assert caught.value.status == 503 and caught.value.code == "stored_data_unreadable"
    assert any(r.message == "decryption failed" for r in caplog.records)
    with tenant_context(org.id):
        events = AuditEvent.objects.filter(
            organization_id=org.id, action="encryption.decrypt_failed", subject_id=str(row_id)
        )
        assert [e.data["column"] for e in events] == ["credentials_clientsecret.digest_ciphertext"]


def test_values_that_are_not_ours_are_refused(org: Organization) -> None:
    column = EncryptedColumn("credentials.ClientSecret", "digest_ciphertext")
    with tenant_context(org.id):
        for value in ["plain-text", "enc:A256GCM:1:***", "enc:A256GCM:x:AAAA", "enc:A256GCM:1:"]:
            with pytest.raises(DecryptionFailed):
                decrypt(value, organization_id=org.id, column=column, row_id=1)
        assert decrypt("", organization_id=org.id, column=column, row_id=1) == ""
        assert encrypt("", organization_id=org.id, column=column, row_id=1) == ""


def _every_value(org: Organization) -> dict[str, str]:
    """Every encrypted value of the organization, decrypted: ``{table.column:id: plaintext}``."""
    opened: dict[str, str] = {}
    for column in ENCRYPTED_COLUMNS:
        rows = _raw(
            org,
            f'SELECT id::text, "{column.column}" FROM "{column.table}"'  # noqa: S608
            f" WHERE \"{column.column}\" <> ''",
            [],
        )
        with tenant_context(org.id):
            for row_id, sealed in rows:
                key = f"{column.table}.{column.column}:{row_id}"
                opened[key] = decrypt(
                    str(sealed), organization_id=org.id, column=column, row_id=row_id
                )
    return opened


def _versions(org: Organization) -> set[int]:
    found: set[int] = set()
    for column in ENCRYPTED_COLUMNS:
        rows = _raw(
            org,
            f'SELECT "{column.column}" FROM "{column.table}" WHERE "{column.column}" <> \'\'',  # noqa: S608
            [],
        )
        found |= {key_version(str(sealed)) for (sealed,) in rows}
    return found


def test_a_moved_secret_reference_is_a_clear_503_and_changes_nothing(
    api: APIClient, org: Organization, hook_url: str
) -> None:
    """An attacker with SQL access copies one subscription's sealed reference onto another:
    rotating the victim's secret is refused, nothing is rotated, and the failure is audited."""
    first, second = (
        api.post("/webhooks", {"url": hook_url, "event_types": ["*"]}, format="json").json()
        for _ in range(2)
    )
    victim = second["subscription"]["id"]
    moved = _raw(
        org,
        "UPDATE webhooks_webhooksubscription SET secret_ref ="
        " (SELECT secret_ref FROM webhooks_webhooksubscription WHERE id = %s)"
        " WHERE id = %s RETURNING secret_ref",
        [first["subscription"]["id"], victim],
    )
    response = api.post(f"/webhooks/{victim}/rotate-secret", {}, format="json")
    assert response.status_code == 503, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["type"] == "urn:agentidp:problem:stored_data_unreadable"
    assert "whsec_" not in response.content.decode()
    after = _raw(org, "SELECT secret_ref FROM webhooks_webhooksubscription WHERE id = %s", [victim])
    assert after == moved  # nothing rotated
    with tenant_context(org.id):
        assert AuditEvent.objects.filter(
            organization_id=org.id, action="encryption.decrypt_failed", subject_id=victim
        ).exists()


def test_rewrap_command_rotates_every_key_and_everything_stays_readable(
    org: Organization, other_org: Organization, hook_url: str
) -> None:
    creds = [credentialed(org) for _ in range(3)] + [credentialed(other_org)]
    with tenant_context(org.id):
        subscription_create(
            actor=TEST_ACTOR, organization_id=org.id, url=hook_url, event_types=["*"]
        )
    before = {o.id: _every_value(o) for o in (org, other_org)}
    assert _versions(org) == {1}
    out = io.StringIO()
    call_command("rewrap", "--rotate", stdout=out)
    report = json.loads(out.getvalue())
    assert report["organizations_done"] == report["organizations"] >= 2
    assert report["values_unreadable"] == 0 and report["values_reencrypted"] >= 8
    assert _versions(org) == {2} and _versions(other_org) == {2}
    data_keys_forget()  # read back through Transit, not the process's memory
    assert {o.id: _every_value(o) for o in (org, other_org)} == before
    wrapped = _raw(org, "SELECT version, wrapped FROM compliance_datakey ORDER BY version", [])
    kek = report["kek_version"]
    assert [v for v, _ in wrapped] == [1, 2]
    assert all(str(w).startswith(f"vault:v{kek}:") for _, w in wrapped)  # Transit's rewrap
    assert all(request_token(c).status_code == 200 for c in creds)
    runs = JobRun.objects.filter(job="rewrap", organization_ref=org.id)
    assert [r.outcome for r in runs] == ["success"]
    again = io.StringIO()
    call_command("rewrap", "--org", org.slug, stdout=again)
    assert json.loads(again.getvalue())["values_reencrypted"] == 0  # nothing left behind


@pytest.mark.django_db(transaction=True)
def test_rewrap_under_load_keeps_every_row_readable() -> None:
    org = OrganizationFactory()
    creds: list[Credentialed] = [credentialed(org) for _ in range(12)]
    with tenant_context(org.id):
        data_key_create(org.id)  # a newer key: every value must move to it
    failures: list[str] = []
    done = threading.Event()

    def tokens() -> int:
        issued = 0
        while not done.is_set():
            response = request_token(random.choice(creds))  # noqa: S311 - test load
            if response.status_code != 200:
                failures.append(f"token {response.status_code}")
            issued += 1
        return issued

    def readers() -> int:
        reads = 0
        while not done.is_set():
            try:
                reads += len(_every_value(org))
            except DecryptionFailed as exc:
                failures.append(f"read {exc}")
        return reads

    def writers() -> int:
        for _ in range(6):
            with tenant_context(org.id):
                agent_id = random.choice(creds).agent.id  # noqa: S311 - test load
                credential_generate(actor=TEST_ACTOR, organization_id=org.id, agent_id=agent_id)
        return 6

    def rewrap() -> Any:
        try:
            return rewrap_organization(org.id, batch=3)
        finally:
            done.set()

    results: list[Any] = []

    def run(call: Any) -> None:
        try:
            results.append(call())
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(c,)) for c in (tokens, readers, writers, rewrap)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    rewrap_organization(org.id)  # what the next scheduled run picks up (rows locked meanwhile)
    opened = _every_value(org)
    assert len(opened) == 12 + 6 + 12  # the digests, the extra secrets and each agent's DID key
    assert _versions(org) == {2}
    assert all(request_token(c).status_code == 200 for c in creds)


@pytest.fixture
def own_bao(tmp_path: Path, settings: Any) -> Iterator[BaoServer]:
    """A private OpenBao the app's secret store points at, so sealing it harms no other test."""
    server = start_bao(tmp_path)
    vault = settings.AGENTIDP["VAULT"]
    previous = dict(vault)
    vault.update(ADDR=server.addr, TOKEN=server.root_token)
    secret_store.cache_clear()
    data_keys_forget()
    yield server
    vault.update(previous)
    secret_store.cache_clear()
    data_keys_forget()
    server.stop()


def test_a_vault_sealed_during_rewrap_stops_it_cleanly(own_bao: BaoServer) -> None:
    org = OrganizationFactory()
    cred = credentialed(org)
    with tenant_context(org.id):
        data_key_create(org.id)
    before = _raw(org, "SELECT id, digest_ciphertext FROM credentials_clientsecret", [])
    data_keys_forget()
    hvac.Client(url=own_bao.addr, token=own_bao.root_token).sys.seal()
    with pytest.raises(SecretStoreUnavailable, match="sealed"):
        data_rewrap_recorded(org.id)
    assert _raw(org, "SELECT id, digest_ciphertext FROM credentials_clientsecret", []) == before
    run = JobRun.objects.get(job="rewrap", organization_ref=org.id)
    assert run.outcome == "failure" and "sealed" in str(run.detail["error"])
    hvac.Client(url=own_bao.addr).sys.submit_unseal_key(own_bao.unseal_key)
    assert data_rewrap_recorded(org.id).values_unreadable == 0
    assert _versions(org) == {2}
    data_keys_forget()
    assert _open_digest(org, cred.credential_id, _digest_row(org, cred.credential_id)[0])


def test_a_ciphertext_and_secret_reference_survive_a_round_trip_per_column(
    org: Organization,
) -> None:
    row = uuid.uuid4()
    with tenant_context(org.id):
        for column in (DIGEST_COLUMN, SECRET_COLUMN, PRIVATE_KEY_COLUMN):
            sealed = encrypt("orgs/x/é\u2603", organization_id=org.id, column=column, row_id=row)
            assert decrypt(sealed, organization_id=org.id, column=column, row_id=row) == (
                "orgs/x/é\u2603"
            )
            other = next(c for c in ENCRYPTED_COLUMNS if c != column)
            with pytest.raises(DecryptionFailed):
                decrypt(sealed, organization_id=org.id, column=other, row_id=row)
