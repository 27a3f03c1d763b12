"""The controls agree with the jobs: a deployment doing its part passes every control at every
hour of a day of beat runs (the clock moved with time-machine, beat's own schedules deciding
what runs when), and each control, broken on its own, fails naming the cause and passes again
once repaired."""

import html
import io
import json
import shutil
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
import yaml
from celery import current_app
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test import Client as HttpClient
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from rest_framework.test import APIClient

from agentidp.tenancy import platform_context, tenant_context
from agents.tasks import attestations_enforce_task
from compliance.jobs import never_run_jobs
from compliance.models import AuditEvent, JobRun
from compliance.tasks import (
    audit_chain_verify_task,
    audit_checkpoint_publish_task,
    secrets_rotation_task,
)
from credentials.models import ClientSecret
from organizations.models import Organization, StaffMembership
from tests.compliance.test_controls_report import PROXY
from tests.factories import StaffFactory
from tests.oidc.conftest import FORM, basic, credentialed
from tests.webhooks.conftest import (
    RECEIVER_HOST,
    Receiver,
    agentidp_override,
    receiver,
    receiver_server,
)

__all__ = ["receiver", "receiver_server"]  # fixtures used here

Controls = dict[str, dict[str, Any]]
TLS: dict[str, Any] = {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_PROTO": "https"}
STAFF_PASSWORD = "-demo-staff-password"  # noqa: S105 - test data, as make run's start with '-'


@pytest.fixture
def tls_mode(settings: Any) -> None:
    """The deployment behind a TLS-terminating proxy (README: "Behind a TLS-terminating
    proxy"); requests sent with ``TLS`` are the proxy's, forwarded as HTTPS."""
    settings.TLS_ENFORCED = settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.TRUSTED_PROXIES = [PROXY]


@pytest.fixture
def eager_celery() -> Iterator[None]:
    """Beat's jobs run here, and what they queue (one task per organization) runs at once:
    Celery's own eager mode, failures raised."""
    conf = current_app.conf
    saved = conf.task_always_eager, conf.task_eager_propagates
    conf.task_always_eager = conf.task_eager_propagates = True
    yield
    conf.task_always_eager, conf.task_eager_propagates = saved


class Beat:
    """django-celery-beat's schedule run in this process: every enabled periodic task (the
    migrations' schedules) runs whenever its schedule says it is due against its last run, as
    the beat process decides; the control jobs that never ran run at start, as beat sends
    them on ``beat_init``. Each run's after-commit work runs as it would after its commit."""

    def __init__(self, capture: Callable[..., Any]) -> None:
        current_app.loader.import_default_modules()  # every app's tasks, as beat loads them
        self.capture = capture
        self.tasks = [t for t in PeriodicTask.objects.filter(enabled=True) if t.schedule]
        self.last: dict[str, datetime] = {}
        self.ran: list[str] = []

    def start(self) -> None:
        now = timezone.now()
        for task in never_run_jobs():
            self._run(task, [], {})
        self.last = {t.name: now for t in self.tasks}

    def tick(self) -> None:
        for task in self.tasks:
            if task.schedule.is_due(self.last[task.name]).is_due:
                self.last[task.name] = timezone.now()
                self._run(task.task, json.loads(task.args or "[]"), json.loads(task.kwargs or "{}"))

    def _run(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        with self.capture(execute=True):
            current_app.tasks[name].apply(args=tuple(args), kwargs=kwargs).get()
        self.ran.append(name)


def _controls(api: APIClient, **extra: Any) -> Controls:
    response = api.get("/compliance/controls", **extra)
    assert response.status_code == 200, response.content
    return {c["id"]: c for c in response.json()["controls"]}


def _failing(controls: Controls) -> dict[str, str]:
    return {k: c["detail"] for k, c in controls.items() if not c["passing"]}


def _json(command: str, *args: str) -> Any:
    out = io.StringIO()
    call_command(command, *args, stdout=out)
    return json.loads(out.getvalue())


def _token(client_id: str, secret: str, scope: str) -> str:
    response = HttpClient().post(
        "/oauth2/token", f"grant_type=client_credentials&scope={scope}", FORM,
        HTTP_AUTHORIZATION=basic(client_id, secret),
    )  # fmt: skip
    assert response.status_code == 200, response.content
    token: str = response.json()["access_token"]
    return token


def _readme_walkthroughs(receiver: Receiver) -> tuple[Organization, User]:
    """What `make run` seeds and the README's walkthroughs then do, step by step through the
    same commands and endpoints: an agent registered with credentials, its token and the API,
    a secret issued, rotated with an hour's grace and revoked, a token introspected and
    revoked, OpenID Connect, the audit log and its verification, a webhook with a test ping
    and its deliveries, the agent's DID, and the owner's admin login."""
    seeded = _json(
        "seeddemo", f"--staff-password={STAFF_PASSWORD}", "--platform-password=-platform-pw"
    )
    admin_id, admin_secret = seeded["agent"]["client_id"], seeded["client_secret"]
    admin: dict[str, Any] = {"HTTP_AUTHORIZATION": "Bearer " + _token(
        admin_id, admin_secret, "agents:read agents:write audit:read credentials:write"
        " webhooks:manage"
    )}  # fmt: skip
    new = _json("createagent", "--org", "demo", "researcher", "--with-credentials",
                "--scope", "agents:read", "--scope", "agents:write")  # fmt: skip
    client_id, secret = new["client_id"], new["client_secret"]
    token = _token(client_id, secret, "agents:read agents:write")
    bearer: dict[str, Any] = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    http = APIClient()
    assert http.get("/agents", **bearer).status_code == 200
    created = http.post("/agents", {"name": "helper", "capabilities": ["search"]}, format="json",
                        **bearer)  # fmt: skip
    assert created.status_code == 201
    issued = http.post(f"/agents/{client_id}/credentials", **admin)
    assert issued.status_code == 201, issued.content
    cred = issued.json()["credential"]["id"]
    assert http.get(f"/agents/{client_id}/credentials", **admin).status_code == 200
    rotated = http.post(f"/agents/{client_id}/credentials/{cred}/rotate", {"grace_seconds": 3600},
                        format="json", **admin)  # fmt: skip
    assert rotated.status_code in (200, 201), rotated.content
    following = rotated.json()["credential"]["id"]
    assert http.delete(f"/agents/{client_id}/credentials/{following}", **admin).status_code == 204
    auth: dict[str, Any] = {"HTTP_AUTHORIZATION": basic(client_id, secret)}
    introspected = HttpClient().post("/oauth2/introspect", f"token={token}", FORM, **auth)
    assert introspected.json()["active"] is True
    assert HttpClient().post("/oauth2/revoke", f"token={token}", FORM, **auth).status_code == 200
    assert http.get("/agents", **bearer).status_code == 401
    oidc = _token(admin_id, admin_secret, "openid profile")
    assert http.get("/agent-info", HTTP_AUTHORIZATION=f"Bearer {oidc}").status_code == 200
    assert http.get("/audit?action=agent.*&page_size=5", **admin).status_code == 200
    assert http.get("/audit/verify", **admin).json()["verified"] is True
    hook = http.post("/webhooks", {"url": receiver.url, "event_types": ["*"]}, format="json",
                     **admin)  # fmt: skip
    assert hook.status_code == 201, hook.content
    hook_id = hook.json()["subscription"]["id"]
    assert http.post(f"/webhooks/{hook_id}/test", **admin).status_code == 202
    assert http.get(f"/agents/{client_id}/did.json").status_code == 200
    with platform_context(reason="tests"):
        organization = Organization.objects.get(slug="demo")
        owner = User.objects.get(username="demo-admin")
    assert HttpClient().login(username="demo-admin", password=STAFF_PASSWORD)
    return organization, owner


@pytest.fixture
def receiver_allowed() -> Iterator[None]:
    restore = agentidp_override(
        SSRF_ALLOWLIST=[RECEIVER_HOST], WEBHOOK_ALLOW_HTTP=True,
        SSRF_ALLOWED_PORTS=["443", "80", "1024-65535"],
    )  # fmt: skip
    yield
    restore()


def test_every_control_passes_at_every_hour_of_a_day_of_beat(
    receiver: Receiver, receiver_allowed: None, eager_celery: None, settings: Any,
    client_for: Callable[..., APIClient], django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:  # fmt: skip
    with time_machine.travel(timezone.now(), tick=False) as clock:
        organization, owner = _readme_walkthroughs(receiver)
        beat = Beat(django_capture_on_commit_callbacks)
        beat.start()  # beat_init: the control jobs' first runs
        auditor = client_for(owner)
        plain = _controls(auditor)  # make run serves plain HTTP: only TLS fails, and says why
        assert _failing(plain) == {"tls": plain["tls"]["detail"]}
        assert "TLS enforcement is off" in plain["tls"]["detail"]
        assert "plain-HTTP" in plain["tls"]["detail"]
        settings.TLS_ENFORCED = settings.SECURE_SSL_REDIRECT = True
        settings.SECURE_HSTS_SECONDS, settings.TRUSTED_PROXIES = 31536000, [PROXY]
        auditor = client_for(owner)  # a client's middleware reads the settings once
        for hour in range(26):
            controls = _controls(auditor, **TLS)
            assert _failing(controls) == {}, (hour, _failing(controls))
            for _ in range(12):  # beat ticks every 5 minutes here (its shortest interval)
                clock.shift(timedelta(minutes=5))
                beat.tick()
    assert {
        "compliance.tasks.secrets_rotation_task", "compliance.tasks.audit_chain_verify_all_task",
        "compliance.tasks.audit_checkpoint_publish_all_task", "compliance.tasks.data_rewrap_all_task",
        "compliance.tasks.outbox_health_task", "agents.tasks.attestations_enforce_all_task",
    } <= set(beat.ran)  # fmt: skip
    assert beat.ran.count("compliance.tasks.secrets_rotation_task") >= 26  # hourly, and at start
    with tenant_context(organization.id):
        # the rotated secret's hour of grace ended: the job revoked it, saying why
        expired = AuditEvent.objects.filter(
            organization_id=organization.id, action="credential.revoked", data__reason="expired"
        )
        assert expired.count() == 1
        assert not ClientSecret.objects.filter(
            organization_id=organization.id, revoked_at=None, expires_at__lte=timezone.now()
        ).exists()
        # idle after the walkthrough, the log grew by the checkpoints over new events only
        checkpoints = AuditEvent.objects.filter(
            organization_id=organization.id, action="audit.checkpoint"
        ).count()
    assert checkpoints < 10


# --- each control broken alone, then repaired -------------------------------------------------


@pytest.fixture
def passing(
    org: Organization, tls_mode: None, client_for: Callable[..., APIClient]
) -> tuple[APIClient, Organization]:
    """An organization passing every control: an owner who logged in, an agent with a secret,
    its jobs run. Returns an auditor's client."""
    owner = StaffFactory(organization=org, role="owner")
    credentialed(org)  # the owner sponsors it
    with platform_context(reason="tests"):
        User.objects.filter(pk=owner.pk).update(last_login=timezone.now())
    auditor = client_for(StaffFactory(organization=org, role="auditor"))
    _jobs_run(org)
    assert _failing(_controls(auditor, **TLS)) == {}
    return auditor, org


def _jobs_run(org: Organization) -> None:
    secrets_rotation_task()
    audit_checkpoint_publish_task(str(org.id))
    audit_chain_verify_task(str(org.id))
    attestations_enforce_task(str(org.id))


def _only_failing(auditor: APIClient, control: str) -> str:
    controls = _controls(auditor, **TLS)
    failing = _failing(controls)
    assert list(failing) == [control], failing
    return failing[control]


def test_encryption_at_rest_fails_on_a_plaintext_value_and_passes_once_restored(
    passing: tuple[APIClient, Organization],
) -> None:
    auditor, org = passing
    select = "SELECT id, digest_ciphertext FROM credentials_clientsecret WHERE organization_id = %s"
    update = "UPDATE credentials_clientsecret SET digest_ciphertext = %s WHERE id = %s"
    with tenant_context(org.id), connection.cursor() as cursor:
        cursor.execute(select, [org.id])
        row_id, sealed = cursor.fetchone()
        cursor.execute(update, ["a-plaintext-digest", row_id])
    why = _only_failing(auditor, "encryption_at_rest")
    assert why == (
        "1 value stored in plaintext in an encrypted column:"
        " 1 in credentials_clientsecret.digest_ciphertext."
    )
    with tenant_context(org.id), connection.cursor() as cursor:  # restored from the backup
        cursor.execute(update, [sealed, row_id])
    assert _failing(_controls(auditor, **TLS)) == {}


def test_tls_fails_over_plain_http_and_when_enforcement_is_off(
    passing: tuple[APIClient, Organization], settings: Any,
    client_for: Callable[..., APIClient],
) -> None:  # fmt: skip
    auditor, org = passing
    refused = auditor.get("/compliance/controls")  # enforced: plain HTTP never gets this far
    assert refused.status_code == 403
    settings.TLS_ENFORCED = settings.SECURE_SSL_REDIRECT = False
    # a client's middleware reads the settings once: a new one for the new settings
    auditor = client_for(StaffFactory(organization=org, role="auditor"))
    why = _failing(_controls(auditor))
    assert list(why) == ["tls"]
    assert why["tls"].startswith("TLS enforcement is off (AGENTIDP_TLS_ENFORCED=0)")
    settings.SECURE_HSTS_SECONDS = 0
    assert "HSTS is off" not in why["tls"]  # the first cause is the one named
    settings.TLS_ENFORCED = settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    auditor = client_for(StaffFactory(organization=org, role="auditor"))
    assert _failing(_controls(auditor, **TLS)) == {}


def test_rotation_fails_when_its_job_stops_and_passes_once_it_runs_again(
    passing: tuple[APIClient, Organization],
) -> None:
    auditor, org = passing
    cred = credentialed(org)
    with tenant_context(org.id):  # a secret whose rotation grace ends in an hour
        ClientSecret.objects.filter(id=cred.credential_id).update(
            expires_at=timezone.now() + timedelta(hours=1)
        )
    with time_machine.travel(timezone.now() + timedelta(hours=3), tick=False):
        why = _failing(_controls(auditor, **TLS))
        # the hourly jobs stopped
        assert set(why) == {"secrets_rotation", "audit_integrity", "agent_sponsorship"}
        assert why["secrets_rotation"].startswith(
            "The secrets-rotation job has not succeeded within 2 hours"
        )
        assert why["agent_sponsorship"].startswith(
            "The attestation job has not succeeded within 2 hours"
        )
        audit_checkpoint_publish_task(str(org.id))
        audit_chain_verify_task(str(org.id))
        attestations_enforce_task(str(org.id))
        assert list(_failing(_controls(auditor, **TLS))) == ["secrets_rotation"]
        detail = secrets_rotation_task()  # the repair: the job runs, and revokes the secret
        assert detail["credentials_expired_revoked"] == {str(org.id): 1}
        controls = _controls(auditor, **TLS)
        assert _failing(controls) == {}
        assert controls["secrets_rotation"]["evidence"]["expired_revoked_by_job_last_24h"] == 1
        assert (
            "1 expired secret revoked by it in the last 24 hours"
            in (controls["secrets_rotation"]["summary"])
        )
    with tenant_context(org.id):
        revoked = AuditEvent.objects.get(
            organization_id=org.id, action="credential.revoked", subject_id=str(cred.credential_id)
        )
    assert revoked.data["reason"] == "expired"


def test_rotation_counts_only_what_its_job_failed_to_revoke(
    passing: tuple[APIClient, Organization],
) -> None:
    auditor, org = passing
    cred = credentialed(org)
    latest = JobRun.objects.filter(job="secrets-rotation").order_by("-started_at").first()
    assert latest is not None
    with tenant_context(org.id):  # expired after the job's latest run: the next one's to revoke
        ClientSecret.objects.filter(id=cred.credential_id).update(
            expires_at=latest.started_at + timedelta(milliseconds=1)
        )
    controls = _controls(auditor, **TLS)
    assert _failing(controls) == {}
    assert controls["secrets_rotation"]["evidence"]["expired_since_last_run"] == 1
    with platform_context(reason="tests"):  # the job's latest run started after it expired
        JobRun.objects.filter(job="secrets-rotation").update(
            started_at=timezone.now(), finished_at=timezone.now()
        )
    why = _only_failing(auditor, "secrets_rotation")
    assert why.startswith("1 client secret expired before the secrets-rotation job's latest")
    assert why.endswith("and is still not revoked.")
    secrets_rotation_task()
    assert _failing(_controls(auditor, **TLS)) == {}


def test_alerting_fails_on_a_missing_rule_and_passes_with_the_shipped_file(
    passing: tuple[APIClient, Organization], tmp_path: Path, settings: Any
) -> None:
    auditor, _ = passing
    shipped = Path(settings.AGENTIDP["ALERT_RULES"])
    rules = yaml.safe_load(shipped.read_text())
    for group in rules["groups"]:
        group["rules"] = [r for r in group["rules"] if r.get("alert") != "AuthFailureSpike"]
    edited = tmp_path / "alerts.yml"
    edited.write_text(yaml.safe_dump(rules))
    settings.AGENTIDP = {**settings.AGENTIDP, "ALERT_RULES": str(edited)}
    why = _only_failing(auditor, "alerting")
    assert why == "The alert rules lack 1 required alert: AuthFailureSpike."
    edited.write_text("groups: [")
    assert "cannot be read as Prometheus rules" in _only_failing(auditor, "alerting")
    shutil.copy(shipped, edited)
    assert _failing(_controls(auditor, **TLS)) == {}


def test_audit_integrity_fails_without_a_fresh_checkpoint_and_passes_once_one_is_signed(
    passing: tuple[APIClient, Organization],
) -> None:
    auditor, org = passing
    with time_machine.travel(timezone.now() + timedelta(minutes=31), tick=False):
        why = _only_failing(auditor, "audit_integrity")
        assert why.startswith("No checkpoint signed within 30 minutes (the newest, #")
        audit_checkpoint_publish_task(str(org.id))  # grown or not, a checkpoint on schedule
        assert _failing(_controls(auditor, **TLS)) == {}


def test_access_review_fails_on_a_deactivated_member_and_passes_once_removed(
    passing: tuple[APIClient, Organization],
) -> None:
    auditor, org = passing
    gone = StaffFactory(organization=org, role="member", username="left-the-company")
    with platform_context(reason="tests"):
        User.objects.filter(pk=gone.pk).update(is_active=False)
    why = _only_failing(auditor, "access_review")
    assert why == "Deactivated accounts still members: left-the-company."
    with platform_context(reason="tests"):
        StaffMembership.objects.filter(user_id=gone.pk).delete()
    assert _failing(_controls(auditor, **TLS)) == {}


def test_every_control_has_its_definition_beside_it_in_the_admin(
    passing: tuple[APIClient, Organization],
) -> None:
    auditor, _ = passing
    controls = _controls(auditor, **TLS)
    for control in controls.values():
        assert set(control["definition"]) == {"checks", "kept_true_by", "fails_when"}
        assert all(len(part) > 40 for part in control["definition"].values()), control["id"]
        assert control["summary"].endswith(".")
    page = html.unescape(
        auditor.get("/admin/compliance/auditevent/report/", **TLS).content.decode()
    )
    for control in controls.values():
        assert control["name"] in page
        assert control["definition"]["kept_true_by"][:60] in page
    assert "docs/compliance/controls.md" in page
