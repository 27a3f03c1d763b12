"""Celery tasks for the audit log: thin, take ids, enter the tenant context explicitly."""

import logging
import uuid

from celery import current_app, shared_task
from celery.signals import beat_init
from django.db import DatabaseError

from agentidp.errors import JSONValue
from agentidp.principals import Principal
from agentidp.tenancy import tenant_context
from compliance.encryption import data_rewrap_recorded
from compliance.health import outbox_health_run
from compliance.integrity import (
    CHECKPOINT_JOB,
    audit_integrity_run_failed,
    audit_integrity_verify_recorded,
    checkpoint_publish,
)
from compliance.jobs import job_recorded, never_run_jobs
from compliance.rotation import secrets_rotation_run
from organizations.tasks import fan_out_per_organization


@shared_task(acks_late=True, autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=5)
def audit_chain_verify_task(organization_id: str) -> dict[str, JSONValue]:
    """Verify one organization's log (chain, signed checkpoints, their copies outside the
    database) inside that organization's context; recorded as an ``audit-chain-verify`` run."""
    org_id = uuid.UUID(organization_id)
    source = "beat:audit-chain-verify"
    try:
        with tenant_context(org_id):
            report = audit_integrity_verify_recorded(
                organization_id=org_id, actor=Principal.system(source, organization_id=org_id),
                source=source,
            )  # fmt: skip
    except Exception as exc:
        audit_integrity_run_failed(org_id, source=source, error=exc)
        raise
    return report.as_document()


@shared_task
def audit_chain_verify_all_task() -> int:
    """Beat job: fan out one verification per organization, deleted ones included (their
    chains are kept); listing them crosses tenants."""
    return fan_out_per_organization(
        audit_chain_verify_task, reason="beat:audit-chain-verify", include_deleted=True
    )


@shared_task(acks_late=True, autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=5)
def audit_checkpoint_publish_task(organization_id: str) -> dict[str, JSONValue]:
    """Check one organization's log, extend its Merkle tree and sign a checkpoint of it."""
    org_id = uuid.UUID(organization_id)
    actor = Principal.system("beat:audit-checkpoint", organization_id=org_id)
    with job_recorded(CHECKPOINT_JOB, organization_id=org_id) as run:
        with tenant_context(org_id):
            outcome = checkpoint_publish(organization_id=org_id, actor=actor)
        run.detail.update(outcome.as_document())
        run.failed = outcome.checkpoint is None
    return outcome.as_document()


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


@beat_init.connect
def first_runs_send(sender: object = None, **kwargs: object) -> list[str]:
    """As beat starts, the control jobs that never ran are sent at once: django-celery-beat
    runs a new interval task only after one interval, and until then the controls they keep
    true would fail on a deployment doing nothing wrong. Nothing is sent when the database
    cannot say (beat's own schedule runs them in time). Returns the tasks sent."""
    logger = logging.getLogger("agentidp.beat")
    try:
        due = never_run_jobs()
    except DatabaseError as exc:
        logger.warning("first runs of the control jobs not sent: %s", type(exc).__name__)
        return []
    for task in due:
        current_app.send_task(task)
    if due:
        logger.info("first runs of the control jobs sent: %s", ", ".join(due))
    return due
