"""Celery tasks of the authorization server (schedule them in the admin with django-celery-beat)."""

import uuid

from celery import shared_task

from agentidp.principals import Principal
from agentidp.tenancy import platform_context, tenant_context
from oidc.services import revocations_purge, signing_key_rotate
from organizations.tasks import fan_out_per_organization

REASON = "beat:rotate-signing-keys"


@shared_task(acks_late=True, autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=5)
def signing_key_rotate_task() -> str:
    """Rotate the signing keys with overlap; returns the new current kid."""
    actor = Principal.system(REASON)
    with platform_context(reason=REASON, actor=actor):
        return signing_key_rotate(actor=actor).kid


@shared_task(acks_late=True, autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=5)
def revocations_purge_task(organization_id: str) -> int:
    """Delete one organization's revocation records whose tokens have expired."""
    org_id = uuid.UUID(organization_id)
    with tenant_context(org_id):
        return revocations_purge(organization_id=org_id)


@shared_task
def revocations_purge_all_task() -> int:
    """Beat job: one purge per organization."""
    return fan_out_per_organization(revocations_purge_task, reason="beat:revocations-purge")
