"""Attacks on the audit log by whoever runs the database: the server's superuser, triggers off
(``session_replication_role = replica``), against committed logs with signed checkpoints whose
copies are in the test run's OpenBao. Each attack must be seen by all four verifiers (the
hourly job, ``GET /audit/verify``, ``verifyauditchain`` and the audit-integrity control) with
the right reason, the ``agentidp_audit_chain_integrity`` gauge must read 0, and an
``audit.integrity_failed`` event must name the organization."""

import io
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from rest_framework.test import APIClient

from agentidp.secrets import secret_store
from agentidp.tenancy import platform_context, tenant_context
from compliance.anchors import anchor_path, anchor_read
from compliance.models import AuditCheckpoint, AuditEvent
from compliance.tasks import audit_chain_verify_task, audit_checkpoint_publish_task
from organizations.choices import MemberRole
from organizations.models import SYSTEM_ORGANIZATION_ID, Organization
from tests.compliance.attacks import append, delete_tail, edit, rechain, truncate
from tests.dbroles import superuser_connection
from tests.factories import OrganizationFactory, StaffFactory

pytestmark = pytest.mark.django_db


@dataclass
class Log:
    """A committed organization whose log has 21 events: checkpoint #1 signed over 17, #2 over
    20 (the 18th and 21st are the checkpoints' own audit.checkpoint events), one passing
    verification on record, and an auditor."""

    organization: Organization
    auditor: User


@pytest.fixture
def log(run_in_threads: Callable[..., list[Any]]) -> Log:
    def build() -> Log:
        organization = OrganizationFactory()  # organization.created: 1
        auditor = StaffFactory(organization=organization, role=MemberRole.AUDITOR)  # 2
        append(organization, 15)  # 3 to 17
        audit_checkpoint_publish_task(str(organization.id))  # #1 over 17; the event is 18
        append(organization, 2)  # 19, 20
        audit_checkpoint_publish_task(str(organization.id))  # #2 over 20; the event is 21
        assert audit_chain_verify_task(str(organization.id))["verified"] is True
        return Log(organization, auditor)

    (built,) = run_in_threads(build)
    assert isinstance(built, Log), built
    return built


# --- the four verifiers ----------------------------------------------------------------------


def run_command(organization_id: uuid.UUID) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    try:
        call_command("verifyauditchain", "--org", str(organization_id), stdout=out)
        code = 0
    except SystemExit as exit_:
        code = int(str(exit_.code))
    document: dict[str, Any] = json.loads(out.getvalue())
    return code, document


def integrity_gauge(client: APIClient, organization_id: uuid.UUID) -> float:
    text = client.get("/metrics").content.decode()
    found = re.search(
        rf'^agentidp_audit_chain_integrity\{{organization="{organization_id}"\}} (\S+)$', text, re.M
    )
    assert found is not None, "no integrity gauge for the organization"
    return float(found.group(1))


def audit_control(client: APIClient) -> dict[str, Any]:
    response = client.get("/compliance/controls")
    assert response.status_code == 200, response.content
    (control,) = [c for c in response.json()["controls"] if c["id"] == "audit_integrity"]
    return dict(control)


def notices(organization_id: uuid.UUID) -> list[dict[str, Any]]:
    """The audit.integrity_failed events about the organization (on the platform's chain)."""
    with platform_context(reason="tests"):
        found = AuditEvent.objects.filter(
            organization_id=SYSTEM_ORGANIZATION_ID, action="audit.integrity_failed",
            data__organization_id=str(organization_id),
        ).order_by("sequence")  # fmt: skip
        return [dict(event.data) for event in found]


def assert_every_verifier_sees(
    log: Log, client_for: Callable[..., APIClient], code: str, sequence: int, said: str
) -> None:
    organization_id = log.organization.id
    auditor = client_for(log.auditor)

    job: Any = audit_chain_verify_task(str(organization_id))
    assert job["verified"] is False
    assert (job["first_invalid"]["code"], job["first_invalid"]["sequence"]) == (code, sequence)
    assert said in job["first_invalid"]["reason"]

    endpoint = auditor.get("/audit/verify")
    assert endpoint.status_code == 200, endpoint.content
    found = endpoint.json()
    assert found["verified"] is False and found["complete"] is True
    assert (found["first_invalid"]["code"], found["first_invalid"]["sequence"]) == (code, sequence)

    exit_status, document = run_command(organization_id)
    assert exit_status == 1 and document["valid"] is False
    (report,) = document["organizations"]
    assert (report["first_invalid"]["code"], report["first_invalid"]["sequence"]) == (
        code,
        sequence,
    )

    control = audit_control(auditor)
    assert control["passing"] is False
    assert f"({code})" in control["detail"], control["detail"]

    assert integrity_gauge(auditor, organization_id) == 0.0
    recorded = notices(organization_id)
    assert len(recorded) >= 3  # the job, the endpoint and the command each recorded one
    assert {n["code"] for n in recorded} == {code}
    assert {n["source"] for n in recorded} >= {
        "beat:audit-chain-verify",
        "api",
        "command:verifyauditchain",
    }


# --- the tests -------------------------------------------------------------------------------


def test_an_untouched_log_passes_every_verifier(
    log: Log, client_for: Callable[..., APIClient]
) -> None:
    auditor = client_for(log.auditor)
    assert audit_chain_verify_task(str(log.organization.id))["verified"] is True
    verified = auditor.get("/audit/verify").json()
    assert verified["verified"] is True and verified["checks"]["roots_compared"] == 2
    assert verified["checks"]["copy"] == {"store": "vault", "anchors": 2, "latest_number": 2}
    assert run_command(log.organization.id)[0] == 0
    control = audit_control(auditor)
    assert control["passing"] is True and control["detail"] == ""
    assert integrity_gauge(auditor, log.organization.id) == 1.0
    assert notices(log.organization.id) == []


def test_an_edited_event_is_seen_by_every_verifier(
    log: Log, client_for: Callable[..., APIClient]
) -> None:
    edit(log.organization.id)
    assert_every_verifier_sees(
        log, client_for, "altered", 10, "hash does not match the event's contents"
    )


def test_a_rechained_log_is_seen_by_every_verifier(
    log: Log, client_for: Callable[..., APIClient]
) -> None:
    rechain(log.organization.id)
    # the hash chain alone verifies: only the signed roots tell
    from_chain = client_for(log.auditor).get("/audit", {"page_size": "50"}).json()["results"]
    assert {e["integrity"] for e in from_chain} == {"ok"}
    # before any full walk, the control's own check already sees the rewrite (at the newest
    # checkpoint's last leaf); the walk then names the first rewritten event
    quick = audit_control(client_for(log.auditor))
    assert quick["passing"] is False and "(rewritten)" in quick["detail"]
    assert_every_verifier_sees(
        log, client_for, "rewritten", 10, "event 10 is not the event checkpoint #1 signed"
    )


def test_a_truncated_log_with_its_head_moved_is_seen_by_every_verifier(
    log: Log, client_for: Callable[..., APIClient]
) -> None:
    truncate(log.organization.id)
    quick = audit_control(client_for(log.auditor))
    assert quick["passing"] is False and "(truncated)" in quick["detail"]
    assert_every_verifier_sees(
        log, client_for, "truncated", 20,
        "the log holds 19 events, but checkpoint #2 signed a tree of 20",
    )  # fmt: skip
    # no checkpoint is signed over it: the job records the failure instead
    published: Any = audit_checkpoint_publish_task(str(log.organization.id))
    assert published["published"] is False
    assert published["integrity"]["first_invalid"]["code"] == "truncated"
    with tenant_context(log.organization.id):
        assert AuditCheckpoint.objects.filter(organization_id=log.organization.id).count() == 2


def test_a_deleted_tail_with_the_head_left_is_seen_by_every_verifier(
    log: Log, client_for: Callable[..., APIClient]
) -> None:
    delete_tail(log.organization.id)
    assert_every_verifier_sees(
        log, client_for, "missing_before_head", 20, "events missing before the chain head"
    )


def test_reused_sequence_numbers_are_named(log: Log, client_for: Callable[..., APIClient]) -> None:
    """Truncated, then the service appends again: the new events take sequence numbers a
    signed checkpoint already covered."""
    truncate(log.organization.id)
    append(log.organization, 2)  # 20 and 21 again, different events
    report = client_for(log.auditor).get("/audit/verify").json()
    assert report["first_invalid"]["code"] == "sequence_reused"
    assert report["first_invalid"]["sequence"] == 20
    assert "sequence 20 was reused" in report["first_invalid"]["reason"]


def test_deleted_checkpoints_are_seen_through_their_copy(
    log: Log, client_for: Callable[..., APIClient]
) -> None:
    copy = anchor_read(log.organization.id)
    assert copy.latest is not None and copy.latest.number == 2
    with superuser_connection() as conn:
        conn.execute(
            "DELETE FROM compliance_auditcheckpoint WHERE organization_id = %s",
            [log.organization.id],
        )
        conn.commit()
    report = client_for(log.auditor).get("/audit/verify").json()
    assert report["verified"] is False
    codes = [f["code"] for f in report["findings"]]
    assert codes[0] == "checkpoint_missing", report["findings"]
    assert "held outside the database (vault store)" in report["findings"][0]["reason"]
    control = audit_control(client_for(log.auditor))
    assert control["passing"] is False and "(checkpoint_missing)" in control["detail"]


def test_a_log_rewritten_with_its_tree_and_checkpoints_is_seen_through_the_copy(
    log: Log, client_for: Callable[..., APIClient]
) -> None:
    """Everything in the database made consistent: the events rechained, the stored tree and
    checkpoint rows gone. Only the copy outside the database still knows the signed root."""
    rechain(log.organization.id)
    with superuser_connection() as conn:
        for table in ("compliance_auditcheckpoint", "compliance_auditmerklenode"):
            conn.execute(f"DELETE FROM {table} WHERE organization_id = %s", [log.organization.id])  # noqa: S608
        conn.commit()
    report = client_for(log.auditor).get("/audit/verify").json()
    codes = {f["code"] for f in report["findings"]}
    assert {"rewritten", "checkpoint_missing"} <= codes, report["findings"]
    rewritten = next(f for f in report["findings"] if f["code"] == "rewritten")
    # the first anchor the rewrite reaches: #1, the day's first checkpoint
    assert "checkpoint #1 (as held outside the database)" in rewritten["reason"]


def test_a_checkpoint_whose_size_goes_backwards_is_refused(
    log: Log, client_for: Callable[..., APIClient]
) -> None:
    with superuser_connection() as conn:
        conn.execute(
            "UPDATE compliance_auditcheckpoint SET tree_size = 5"
            " WHERE organization_id = %s AND number = 2",
            [log.organization.id],
        )
        conn.commit()
    report = client_for(log.auditor).get("/audit/verify").json()
    codes = {f["code"] for f in report["findings"]}
    assert {"checkpoint_size_backwards", "checkpoint_copy_mismatch"} <= codes, report["findings"]


def test_checkpoints_are_chained_signed_and_copied_outside_the_database(log: Log) -> None:
    with tenant_context(log.organization.id):
        first, second = AuditCheckpoint.objects.filter(
            organization_id=log.organization.id
        ).order_by("number")
        events = AuditEvent.objects.filter(
            organization_id=log.organization.id, action="audit.checkpoint"
        ).order_by("sequence")
        published = [(e.sequence, e.data["number"], e.data["signature"]) for e in events]
    assert (first.number, first.tree_size, first.previous_tree_size) == (1, 17, 0)
    assert (second.number, second.tree_size) == (2, 20)
    assert (second.previous_tree_size, second.previous_root_hash) == (17, first.root_hash)
    assert published == [(18, 1, first.signature), (21, 2, second.signature)]
    stored = secret_store().read(anchor_path(log.organization.id))
    latest = json.loads(stored["latest"])
    assert (latest["number"], latest["tree_size"], latest["root_hash"]) == (
        2, 20, second.root_hash,
    )  # fmt: skip
    daily = json.loads(stored["daily"])
    assert [entry["number"] for entry in daily.values()] == [1]  # the day's first
