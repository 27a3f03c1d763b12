"""Celery tasks for organizations: thin, take ids, enter the tenant context explicitly."""

import uuid

from celery import Task, shared_task

from agentidp.tenancy import tenant_context
from agentidp.usage import month_start, previous_month
from organizations.selectors import organization_ids_for_jobs
from organizations.services import token_usage_persist


@shared_task(acks_late=True, autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=5)
def token_usage_persist_task(organization_id: str) -> int:
    """Persist this month's token count, and last month's final one; returns this month's."""
    org_id = uuid.UUID(organization_id)
    this_month = month_start()
    with tenant_context(org_id):
        token_usage_persist(organization_id=org_id, month=previous_month(this_month))
        return token_usage_persist(organization_id=org_id, month=this_month).tokens_issued


def fan_out_per_organization(
    task: Task[[str], object], *, reason: str, include_deleted: bool = False
) -> int:
    """A beat job's work: queue ``task`` once per live organization (and deleted ones with
    ``include_deleted``; the listing crosses tenants, under ``reason``); each task enters its
    organization itself. Returns the count."""
    ids = organization_ids_for_jobs(reason=reason, include_deleted=include_deleted)
    for organization_id in ids:
        task.delay(organization_id)
    return len(ids)


@shared_task
def token_usage_persist_all_task() -> int:
    """Beat job: one persistence task per organization."""
    return fan_out_per_organization(token_usage_persist_task, reason="beat:token-usage")
