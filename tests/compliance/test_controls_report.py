"""GET /compliance/controls computed from the real state, and the auditors' report as JSON and
as a PDF (its text extracted with pypdf), from the API and from the admin."""

import io
import json
import shutil
import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pypdf
import pytest
import time_machine
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client as HttpClient
from django.utils import timezone
from rest_framework.test import APIClient

from agentidp.tenancy import platform_context, tenant_context
from agents.tasks import attestations_enforce_task
from compliance.models import JobRun
from compliance.tasks import (
    audit_chain_verify_task,
    audit_checkpoint_publish_task,
    secrets_rotation_task,
)
from organizations.models import Organization, StaffMembership
from tests.factories import StaffFactory
from tests.oidc.conftest import FORM, basic, credentialed

PROXY = "10.0.0.9"


@pytest.fixture
def auditor(org: Organization, client_for: Callable[..., APIClient]) -> APIClient:
    return client_for(StaffFactory(organization=org, role="auditor"))


@pytest.fixture
def behind_tls_proxy(settings: Any) -> dict[str, Any]:
    """The deployment as `make run` behind a TLS-terminating proxy: enforcement on, the proxy
    trusted, the request forwarded as HTTPS."""
    settings.TLS_ENFORCED = settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.TRUSTED_PROXIES = [PROXY]
    return {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_PROTO": "https"}


def _controls(api: APIClient, **extra: Any) -> dict[str, dict[str, Any]]:
    response = api.get("/compliance/controls", **extra)
    assert response.status_code == 200, response.content
    body = response.json()
    return {c["id"]: c for c in body["controls"]}


def _jobs_run(org: Organization) -> None:
    secrets_rotation_task()
    audit_checkpoint_publish_task(str(org.id))
    audit_chain_verify_task(str(org.id))
    attestations_enforce_task(str(org.id))


def test_every_control_passes_when_the_deployment_does_its_part(
    org: Organization, auditor: APIClient, client_for: Callable[..., APIClient],
    behind_tls_proxy: dict[str, Any],
) -> None:  # fmt: skip
    owner = client_for(StaffFactory(organization=org, role="owner"))  # logged in: last_login
    credentialed(org)  # the owner sponsors it
    assert owner.get("/agents", **behind_tls_proxy).status_code == 200
    before = _controls(auditor, **behind_tls_proxy)
    assert set(before) == {
        "encryption_at_rest", "tls", "secrets_rotation", "alerting", "audit_integrity",
        "access_review", "agent_sponsorship",
    }  # fmt: skip
    assert before["secrets_rotation"]["passing"] is False  # the job has never run
    assert before["audit_integrity"]["evidence"]["last_run"] is None
    _jobs_run(org)
    controls = _controls(auditor, **behind_tls_proxy)
    assert {k: c["passing"] for k, c in controls.items()} == dict.fromkeys(controls, True)
    encryption = controls["encryption_at_rest"]["evidence"]
    assert encryption["key_encryption_key"]["kind"] == "transit"
    assert encryption["encrypted_values"] >= 2 and not any(encryption["plaintext_values"].values())
    assert controls["tls"]["evidence"]["request_secure"] is True
    assert controls["audit_integrity"]["evidence"]["latest_checkpoint"]["tree_size"] >= 1
    assert all(c["checked"] and c["checked_at"] and c["criteria"] for c in controls.values())


def test_controls_fail_on_what_is_really_wrong(org: Organization, auditor: APIClient) -> None:
    cred = credentialed(org)
    plain_http = _controls(auditor)  # this suite serves plain HTTP, enforcement off
    assert plain_http["tls"]["passing"] is False
    assert plain_http["tls"]["evidence"]["enforced"] is False
    assert plain_http["tls"]["evidence"]["request_secure"] is False
    with tenant_context(org.id), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE credentials_clientsecret SET digest_ciphertext = 'plain' WHERE id = %s",
            [cred.credential_id],
        )
    controls = _controls(auditor)
    encryption = controls["encryption_at_rest"]
    assert encryption["passing"] is False
    assert (
        encryption["evidence"]["plaintext_values"]["credentials_clientsecret.digest_ciphertext"]
        == 1
    )
    review = controls["access_review"]  # only an auditor: nobody owns the organization
    assert review["passing"] is False and review["evidence"]["owners"] == 0


def test_access_review_flags_owners_and_admins_idle_for_ninety_days(
    org: Organization, auditor: APIClient
) -> None:
    long_ago = timezone.now() - timedelta(days=91)
    StaffFactory(organization=org, role="owner", username="new-owner")  # joined today
    idle = StaffFactory(organization=org, role="admin", username="idle-admin")
    absent = StaffFactory(organization=org, role="owner", username="absent-owner")
    old = StaffFactory(organization=org, role="member", username="old-member")
    with platform_context(reason="tests"):
        User.objects.filter(pk=idle.pk).update(last_login=long_ago)
        StaffMembership.objects.filter(user_id__in=[absent.pk, old.pk]).update(created_at=long_ago)
    review = _controls(auditor)["access_review"]
    assert sorted(review["evidence"]["stale_privileged"]) == ["absent-owner", "idle-admin"]
    assert review["passing"] is False
    with platform_context(reason="tests"):
        User.objects.filter(pk__in=[idle.pk, absent.pk]).update(last_login=timezone.now())
    assert _controls(auditor)["access_review"]["passing"] is True  # a member's age is no risk


def test_controls_and_report_need_the_audit_scope(
    org: Organization, client_for: Callable[..., APIClient]
) -> None:
    member = client_for(StaffFactory(organization=org, role="member"))
    assert member.get("/compliance/controls").status_code == 403
    assert member.get("/compliance/report").status_code == 403
    assert APIClient().get("/compliance/report").status_code == 401


def _pdf_text(content: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(content))
    text = " ".join(page.extract_text() for page in reader.pages)
    return " ".join(text.split())  # table cells wrap their lines


def test_the_report_as_json_and_as_a_readable_pdf(
    org: Organization, auditor: APIClient, behind_tls_proxy: dict[str, Any]
) -> None:
    cred = credentialed(org)
    wrong = {"HTTP_AUTHORIZATION": basic(cred.client_id, "ais_wrong"), **behind_tls_proxy}
    for _ in range(3):
        refused = HttpClient().post("/oauth2/token", "grant_type=client_credentials", FORM, **wrong)
        assert refused.status_code == 401
    _jobs_run(org)
    report = auditor.get("/compliance/report", **behind_tls_proxy).json()
    assert report["organization"]["slug"] == org.slug
    failed = report["failed_authentications"]
    assert (failed["total"], failed["by_reason"]) == (3, {"bad_secret": 3})
    assert report["chain_verification"]["verified"] is True
    assert report["latest_checkpoint"]["signature"].count(".") == 2
    assert [m["role"] for m in report["access_review"]] == ["auditor"]
    assert {c["id"] for c in report["controls"]} >= {"encryption_at_rest", "access_review"}
    assert any(r["action"] == "credential.generated" for r in report["rotation_history"])
    pdf = auditor.get("/compliance/report", HTTP_ACCEPT="application/pdf", **behind_tls_proxy)
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    assert (
        pdf["Content-Disposition"] == f'attachment; filename="agentidp-compliance-{org.slug}.pdf"'
    )
    text = _pdf_text(pdf.content)
    for expected in (
        "Encryption at rest", "Encryption in transit (TLS)", "Access review", "Audit log integrity",
        "the latest signed checkpoint", "3 failed client authentications in the period",
        "bad_secret", org.name, "Dead letters",
    ):  # fmt: skip
        assert expected in text, expected
    assert auditor.get("/compliance/report?format=pdf", **behind_tls_proxy).content[:4] == b"%PDF"


@pytest.mark.parametrize(
    "query",
    [{"since": "x"}, {"since": "2026-05-01T00:00:00Z", "until": "2026-04-01T00:00:00Z"},
     {"since": "2020-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, {"until": "2026\x00"},
     {"since": ""}],
)  # fmt: skip
def test_a_bad_period_is_a_problem_even_when_a_pdf_was_asked(
    auditor: APIClient, query: dict[str, str]
) -> None:
    response = auditor.get("/compliance/report", query, HTTP_ACCEPT="application/pdf")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert json.loads(response.content)["status"] == 400


def test_an_auditor_downloads_the_report_from_the_admin(
    org: Organization, auditor: APIClient, client_for: Callable[..., APIClient]
) -> None:
    listing = auditor.get("/admin/compliance/auditevent/").content.decode()
    assert "/admin/compliance/auditevent/report/" in listing
    page = auditor.get("/admin/compliance/auditevent/report/")
    assert page.status_code == 200 and "Access review" in page.content.decode()
    pdf = auditor.get("/admin/compliance/auditevent/report/", {"download": "pdf"})
    assert pdf["Content-Type"] == "application/pdf" and "attachment" in pdf["Content-Disposition"]
    assert "Encryption at rest" in _pdf_text(pdf.content)
    document = auditor.get("/admin/compliance/auditevent/report/", {"download": "json"}).json()
    assert document["organization"]["id"] == str(org.id)
    refused = auditor.get("/admin/compliance/auditevent/report/", {"download": "pdf", "since": "x"})
    assert refused.status_code == 200 and "YYYY-MM-DD" in refused.content.decode()
    member = client_for(StaffFactory(organization=org, role="member"))
    assert member.get("/admin/compliance/auditevent/report/").status_code == 403


def test_the_pdf_opens_with_a_summary_page_an_auditor_can_hand_on(
    org: Organization, auditor: APIClient, behind_tls_proxy: dict[str, Any], artifacts: Path
) -> None:
    cred = credentialed(org)
    wrong = {"HTTP_AUTHORIZATION": basic(cred.client_id, "ais_wrong"), **behind_tls_proxy}
    assert HttpClient().post("/oauth2/token", "grant_type=client_credentials", FORM, **wrong)
    _jobs_run(org)
    started = timezone.now() - timedelta(days=2)
    with platform_context(reason="tests"):  # two days of checkpoint runs: far more than a page
        JobRun.objects.bulk_create(
            JobRun(job="audit-checkpoint", organization_ref=org.id, outcome="success",
                   started_at=started + timedelta(minutes=10 * n),
                   finished_at=started + timedelta(minutes=10 * n, seconds=1),
                   detail={"summary": f"checkpoint {n} signed over 9 events"})
            for n in range(250)
        )  # fmt: skip
    # Each report records its own verification, which the next one names to the minute: the
    # JSON and the PDF are made at one moment, so they say the same across a minute's turn.
    with time_machine.travel(timezone.now(), tick=False):
        report = auditor.get("/compliance/report", **behind_tls_proxy).json()
        pdf = auditor.get("/compliance/report", HTTP_ACCEPT="application/pdf", **behind_tls_proxy)
    assert report["verdict"] == "fail"  # only an auditor: nobody owns the organization
    assert report["verdict_sentence"] == "1 of 7 controls fail: Access review. The others pass."
    assert len([r for r in report["job_runs"] if r["job"] == "audit-checkpoint"]) == 251
    assert report["failed_authentications"]["sentence"] == (
        "1 failed client authentication in the period: 1 with a wrong client secret (bad_secret)."
    )
    reader = pypdf.PdfReader(io.BytesIO(pdf.content))
    first = " ".join(reader.pages[0].extract_text().split())
    assert "Verdict: FAIL. 1 of 7 controls fail: Access review." in first
    assert org.name in first and org.slug in first
    for control in report["controls"]:
        status = "Pass" if control["passing"] else "Fail"
        assert f"{control['name']} ({', '.join(control['criteria'])}) {status}" in first, control
        assert control["summary"].split(";")[0] in first
    assert "The organization has no owner." in first  # the cause, in a sentence
    checkpoint = report["latest_checkpoint"]
    assert f"signed checkpoint number {checkpoint['number']}" in first
    assert checkpoint["root_hash"] in first.replace(" ", "")
    assert "{" not in first and '"' not in first  # no JSON dump on the summary page
    everything = [" ".join(page.extract_text().split()) for page in reader.pages]
    text = " ".join(everything)
    assert len(reader.pages) >= 4
    assert text.count("audit-checkpoint success") == 251  # every run, over several pages
    assert "audit-checkpoint ran 251 times, 251 succeeded" in text
    assert "Kept true by: the hourly secrets-rotation job" in text
    assert "{" not in text  # the details are tables, not JSON
    for word in ("Passin g", "Pas sing", "Evid ence"):
        assert word not in text
    (artifacts / "report.pdf").write_bytes(pdf.content)
    subprocess.run(  # noqa: S603 - poppler's pdftoppm, installed by make test
        [shutil.which("pdftoppm") or "pdftoppm", "-png", "-r", "80", "-f", "1", "-l", "1", "-singlefile",
         str(artifacts / "report.pdf"), str(artifacts / "report-page-1")],
        check=True, timeout=60,
    )  # fmt: skip
    assert (artifacts / "report-page-1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_sponsorship_control_fails_on_an_unanswered_or_lapsed_agent_and_recovers(
    org: Organization, auditor: APIClient, client_for: Callable[..., APIClient]
) -> None:
    owner_login = StaffFactory(organization=org, role="owner")
    owner = client_for(owner_login)
    cred = credentialed(org)
    attestations_enforce_task(str(org.id))
    control = _controls(auditor)["agent_sponsorship"]
    assert control["passing"] is True, control["detail"]
    assert control["evidence"]["active_agents"] == 1
    # a sponsor gone from under an active agent (a row edited behind the services' back)
    with tenant_context(org.id), connection.cursor() as cursor:
        cursor.execute("UPDATE agents_agent SET sponsor_id = NULL WHERE id = %s", [cred.agent.id])
    control = _controls(auditor)["agent_sponsorship"]
    assert control["passing"] is False
    assert control["detail"].startswith(f"Active without an active sponsor: {cred.agent.name}")
    assert control["evidence"]["without_active_sponsor"] == [cred.agent.name]
    reassigned = owner.put(f"/agents/{cred.agent.id}/sponsor", {"username": owner_login.username},
                           format="json")  # fmt: skip
    assert reassigned.status_code == 200
    assert _controls(auditor)["agent_sponsorship"]["passing"] is True
    # an attestation that lapsed: failing until the job suspends the agent or it is attested
    with time_machine.travel(timezone.now() + timedelta(days=91), tick=False):
        fresh = client_for(StaffFactory(organization=org, role="auditor"))
        control = _controls(fresh)["agent_sponsorship"]
        assert control["passing"] is False
        assert "past their 90-day attestation" in control["detail"]
        attestations_enforce_task(str(org.id))
        control = _controls(fresh)["agent_sponsorship"]
        assert control["passing"] is True, control["detail"]
        assert control["evidence"]["active_agents"] == 0  # suspended by the job
