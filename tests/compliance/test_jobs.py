"""The scheduled compliance jobs: each run recorded with its outcome (visible in the admin to
platform staff only), and the metrics read from those runs."""

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client as HttpClient
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from rest_framework.test import APIClient

from agentidp.secrets import secret_store
from agentidp.tenancy import platform_context, tenant_context
from compliance.models import AuditEvent, JobRun
from compliance.tasks import (
    audit_chain_verify_task,
    audit_checkpoint_publish_task,
    outbox_health_task,
    secrets_rotation_task,
)
from credentials.models import ClientSecret
from oidc.choices import KeyStatus
from oidc.keys import signing_keys_ensure
from oidc.models import SigningKey
from organizations.models import Organization
from tests.compliance.test_audit_verify import chain, tamper  # noqa: F401 - the fixture
from tests.factories import TEST_ACTOR, OrganizationFactory, StaffFactory
from tests.oidc.conftest import credentialed
from tests.webhooks.conftest import agentidp_override
from webhooks.services import subscription_create


def _metric(name: str, organization: Organization) -> float | None:
    page = HttpClient().get("/metrics").content.decode()
    found = re.search(rf'^{name}{{organization="{organization.id}"}} (\S+)$', page, re.M)
    return float(found.group(1)) if found else None


def test_secrets_rotation_counts_expiring_credentials_and_rotates_a_due_signing_key(
    org: Organization, other_org: Organization
) -> None:
    soon = [credentialed(org) for _ in range(2)]
    credentialed(other_org)  # no expiry
    with platform_context(reason="tests"):
        ClientSecret.objects.filter(id__in=[c.credential_id for c in soon]).update(
            expires_at=timezone.now() + timedelta(days=3)
        )
        signing_keys_ensure(actor=TEST_ACTOR)
        old = timezone.now() - timedelta(days=120)
        SigningKey.objects.filter(algorithm="RS256").update(created_at=old, activated_at=old)
        before = SigningKey.objects.get(algorithm="RS256", status=KeyStatus.CURRENT).kid
    detail = secrets_rotation_task()
    assert detail["credentials_expiring"] == {str(org.id): 2}
    rotated = detail["signing_keys_rotated"]
    assert isinstance(rotated, dict) and rotated["RS256"] != before
    with platform_context(reason="tests"):
        assert SigningKey.objects.get(kid=before).status == KeyStatus.RETIRED
    assert detail["secret_store_lease"] == {"store": "vault", "renewable": False, "ttl_seconds": 0}
    run = JobRun.objects.get(job="secrets-rotation")
    assert run.outcome == "success" and run.detail == detail
    assert _metric("agentidp_credentials_expiring_soon_total", org) == 2.0
    assert _metric("agentidp_credentials_expiring_soon_total", other_org) is None


def test_a_failing_run_is_recorded_as_a_failure(settings: Any) -> None:
    vault = settings.AGENTIDP["VAULT"]
    reachable = vault["ADDR"]
    vault["ADDR"] = "http://127.0.0.1:9"  # nothing listens there
    secret_store.cache_clear()
    try:
        with pytest.raises(Exception, match="unreachable"):
            secrets_rotation_task()
    finally:
        vault["ADDR"] = reachable
        secret_store.cache_clear()
    run = JobRun.objects.get(job="secrets-rotation")
    assert run.outcome == "failure" and "unreachable" in str(run.detail["error"])


def test_chain_verification_sets_the_integrity_gauge(chain: Organization) -> None:  # noqa: F811
    tamper(chain.id, 2)  # before this test's transaction writes to the audit table
    org = OrganizationFactory()
    assert audit_chain_verify_task(str(chain.id))["verified"] is False
    assert audit_chain_verify_task(str(org.id))["verified"] is True
    runs = {r.organization_ref: r.outcome for r in JobRun.objects.filter(job="audit-chain-verify")}
    assert runs == {chain.id: "failure", org.id: "success"}
    assert _metric("agentidp_audit_chain_integrity", chain) == 0.0
    assert _metric("agentidp_audit_chain_integrity", org) == 1.0


def test_checkpoint_publication_is_recorded(org: Organization) -> None:
    published = audit_checkpoint_publish_task(str(org.id))
    run = JobRun.objects.get(job="audit-checkpoint", organization_ref=org.id)
    assert run.outcome == "success" and run.detail["tree_size"] == published["tree_size"]


def test_an_idle_log_gets_a_checkpoint_every_run_and_stays_the_size_it_is(
    org: Organization,
) -> None:
    """Signed on schedule, grown or not (the control checks the newest one's age); only a
    checkpoint over new events is recorded as an event, so idle runs add nothing to the log."""
    credentialed(org)
    runs: list[Any] = [audit_checkpoint_publish_task(str(org.id)) for _ in range(3)]
    assert [r["number"] for r in runs] == [1, 2, 3]
    assert [r["grown"] for r in runs] == [True, False, False]
    assert runs[1]["summary"].endswith("no change since checkpoint 1")
    assert runs[2]["summary"].endswith("no change since checkpoint 2")
    # the second covers the first's own audit.checkpoint event, the third the same tree
    assert runs[1]["tree_size"] == runs[0]["tree_size"] + 1 == runs[2]["tree_size"]
    assert runs[2]["root_hash"] == runs[1]["root_hash"]
    with tenant_context(org.id):
        actions = list(
            AuditEvent.objects.filter(organization_id=org.id).values_list("action", flat=True)
        )
    assert len(actions) == runs[2]["tree_size"] and actions.count("audit.checkpoint") == 1
    recorded = JobRun.objects.filter(job="audit-checkpoint", organization_ref=org.id)
    assert recorded.filter(outcome="success").count() == 3
    credentialed(org)  # the log grows again: the next checkpoint is an event again
    assert audit_checkpoint_publish_task(str(org.id))["grown"] is True


def test_outbox_health_reports_relay_lag(org: Organization) -> None:
    restore = agentidp_override(SSRF_ALLOWLIST=["127.0.0.2"])
    try:
        with tenant_context(org.id):
            subscription_create(
                actor=TEST_ACTOR, organization_id=org.id, url="https://127.0.0.2/",
                event_types=["*"],
            )  # fmt: skip
    finally:
        restore()
    detail = outbox_health_task()
    lag = detail["relay_lag_events"]
    assert isinstance(lag, dict) and int(str(lag[str(org.id)])) >= 1  # not relayed yet
    assert JobRun.objects.get(job="outbox-health").outcome == "success"


def test_every_job_has_an_editable_schedule() -> None:
    tasks = set(PeriodicTask.objects.values_list("task", flat=True))
    assert {
        "compliance.tasks.secrets_rotation_task",
        "compliance.tasks.audit_chain_verify_all_task",
        "compliance.tasks.audit_checkpoint_publish_all_task",
        "compliance.tasks.data_rewrap_all_task",
        "compliance.tasks.outbox_health_task",
    } <= tasks


def test_runs_are_in_the_admin_for_platform_staff_only(
    org: Organization, superuser: Any, client_for: Callable[..., APIClient]
) -> None:
    secrets_rotation_task()
    page = client_for(superuser).get("/admin/compliance/jobrun/")
    assert page.status_code == 200 and "secrets-rotation" in page.content.decode()
    owner = client_for(StaffFactory(organization=org, role="owner"))
    assert owner.get("/admin/compliance/jobrun/").status_code == 403
