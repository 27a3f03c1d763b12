"""Celery tasks for federation: thin, take ids, enter the tenant context explicitly."""

import uuid

from celery import shared_task
from django.db import DatabaseError

from agentidp.principals import Principal
from agentidp.tenancy import tenant_context
from federation.selectors import organizations_with_partners
from federation.services import partners_maintain

MAINTAIN_REASON = "beat:federation-maintain"


@shared_task(acks_late=True, autoretry_for=(DatabaseError,), retry_backoff=True, max_retries=5)
def partners_maintain_task(organization_id: str) -> dict[str, int]:
    """Expire partners past their expiry, refresh keys ahead of their TTL, forget old jtis."""
    org_id = uuid.UUID(organization_id)
    with tenant_context(org_id):
        return partners_maintain(
            organization_id=org_id,
            actor=Principal.system("beat:federation", organization_id=org_id),
        )


@shared_task
def partners_maintain_all_task() -> int:
    """Beat job: one maintenance task per organization that has partners."""
    ids = organizations_with_partners(reason=MAINTAIN_REASON)
    for organization_id in ids:
        partners_maintain_task.delay(organization_id)
    return len(ids)
