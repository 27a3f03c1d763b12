"""Celery tasks for the audit log: thin, take ids, enter the tenant context explicitly."""

import uuid

from celery import shared_task

from agentidp.errors import JSONValue
from agentidp.tenancy import tenant_context
from compliance.checkpoints import checkpoint_publish
from compliance.encryption import data_rewrap_recorded
from compliance.health import outbox_health_run
from compliance.jobs import job_recorded
from compliance.rotation import secrets_rotation_run
from compliance.services import audit_chain_verify_recorded
from organizations.tasks import fan_out_per_organization


@shared_task(acks_late=True, autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=5)
def audit_chain_verify_task(organization_id: str) -> dict[str, JSONValue]:
    """Verify one organization's chain inside that organization's context."""
    org_id = uuid.UUID(organization_id)
    with job_recorded("audit-chain-verify", organization_id=org_id) as run:
        with tenant_context(org_id):
            result = audit_chain_verify_recorded(organization_id=org_id)
        run.detail.update(result.as_document(org_id))
        run.failed = not result.valid
    return result.as_document(org_id)


@shared_task
def audit_chain_verify_all_task() -> int:
    """Beat job: fan out one verification per organization, deleted ones included (their
    chains are kept); listing them crosses tenants."""
    return fan_out_per_organization(
        audit_chain_verify_task, reason="beat:audit-chain-verify", include_deleted=True
    )


@shared_task(acks_late=True, autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=5)
def audit_checkpoint_publish_task(organization_id: str) -> dict[str, JSONValue]:
    """Extend one organization's Merkle tree and sign a checkpoint of it."""
    org_id = uuid.UUID(organization_id)
    with job_recorded("audit-checkpoint", organization_id=org_id) as run:
        with tenant_context(org_id):
            checkpoint = checkpoint_publish(organization_id=org_id)
        run.detail.update(tree_size=checkpoint.tree_size, root_hash=checkpoint.root_hash)
    return {"tree_size": checkpoint.tree_size, "root_hash": checkpoint.root_hash}


@shared_task
def audit_checkpoint_publish_all_task() -> int:
    """Beat job: one checkpoint publication per organization (deleted ones too: their logs
    are kept)."""
    return fan_out_per_organization(
        audit_checkpoint_publish_task, reason="beat:audit-checkpoint", include_deleted=True
    )


@shared_task(acks_late=True, autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=5)
def data_rewrap_task(organization_id: str) -> dict[str, int]:
    """Bring one organization's data at rest under its newest keys (a new data key when the
    newest is older than ``DATA_KEY_ROTATION_DAYS``); recorded as a job run."""
    return data_rewrap_recorded(uuid.UUID(organization_id)).as_document()


@shared_task
def data_rewrap_all_task() -> int:
    """Beat job: one rewrap per live organization."""
    return fan_out_per_organization(data_rewrap_task, reason="beat:rewrap")


@shared_task
def secrets_rotation_task() -> dict[str, JSONValue]:
    """Beat job: credentials, signing keys and DID keys nearing expiry; due signing keys
    rotated; the Vault lease renewed (``compliance.rotation``); recorded."""
    return secrets_rotation_run()


@shared_task
def outbox_health_task() -> dict[str, JSONValue]:
    """Beat job: pending deliveries, relay lag and dead letters (``compliance.health``)."""
    return outbox_health_run()
