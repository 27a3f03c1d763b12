"""Celery tasks for agents: thin, take ids, enter the tenant context explicitly."""

import uuid

from celery import shared_task

from agentidp.tenancy import tenant_context
from agents.services import attestations_enforce
from compliance.jobs import ATTESTATION_JOB, job_recorded
from organizations.tasks import fan_out_per_organization


@shared_task(acks_late=True, autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=5)
def attestations_enforce_task(organization_id: str) -> dict[str, int]:
    """Warn the sponsors of agents whose attestation falls due within 7 days, and suspend the
    agents whose attestation has lapsed; recorded as an ``agent-attestation`` run."""
    org_id = uuid.UUID(organization_id)
    with job_recorded(ATTESTATION_JOB, organization_id=org_id) as run:
        with tenant_context(org_id):
            outcome = attestations_enforce(organization_id=org_id)
        run.detail.update(warned=outcome.warned, suspended=outcome.suspended)
    return {"warned": outcome.warned, "suspended": outcome.suspended}


@shared_task
def attestations_enforce_all_task() -> int:
    """Beat job: one attestation check per live organization."""
    return fan_out_per_organization(attestations_enforce_task, reason="beat:agent-attestation")
