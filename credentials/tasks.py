"""Celery tasks for credentials: thin, take ids, enter the tenant context explicitly."""

import uuid

from celery import shared_task

from agentidp.tenancy import tenant_context
from credentials.services import credential_last_used_persist
from organizations.tasks import fan_out_per_organization


@shared_task(acks_late=True, autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=5)
def credential_last_used_persist_task(organization_id: str) -> int:
    org_id = uuid.UUID(organization_id)
    with tenant_context(org_id):
        return credential_last_used_persist(organization_id=org_id)


@shared_task
def credential_last_used_persist_all_task() -> int:
    """Beat job: persist last-used times for every organization (listing them crosses tenants)."""
    return fan_out_per_organization(
        credential_last_used_persist_task, reason="beat:credential-last-used"
    )
