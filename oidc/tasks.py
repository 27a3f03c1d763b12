"""Celery tasks of the authorization server (schedule them in the admin with django-celery-beat)."""

import logging
import uuid

from celery import shared_task

from agentidp.principals import Principal
from agentidp.secrets import SecretStoreUnavailable
from agentidp.tenancy import platform_context, tenant_context
from oidc.keys import jwks_cache_clear
from oidc.replay import assertion_uses_purge
from oidc.services import (
    RotationRefused,
    revocations_purge,
    signing_key_rotate,
    signing_keys_remove_expired,
)
from organizations.tasks import fan_out_per_organization

logger = logging.getLogger("agentidp.keys")

REASON = "beat:rotate-signing-keys"


@shared_task(
    acks_late=True,
    autoretry_for=(ConnectionError, SecretStoreUnavailable),
    retry_backoff=True,
    max_retries=5,
)
def signing_key_rotate_task() -> dict[str, str]:
    """Beat job: rotate every algorithm's keys; returns ``{algorithm: new current kid}``.

    A rotation refused because a next key is not yet pre-published long enough is logged and
    returns ``{}`` (the next run rotates); an unreachable secret store is retried."""
    actor = Principal.system(REASON)
    try:
        with platform_context(reason=REASON, actor=actor):
            rotation = signing_key_rotate(actor=actor)
    except RotationRefused as refused:
        logger.warning("signing key rotation refused: %s", refused.detail)
        return {}
    return {name: key.kid for name, key in rotation.activated.items()}


@shared_task(
    acks_late=True,
    autoretry_for=(ConnectionError, SecretStoreUnavailable),
    retry_backoff=True,
    max_retries=5,
)
def signing_keys_remove_expired_task() -> list[str]:
    """Beat job: remove retired keys whose last token has expired; returns their kids."""
    actor = Principal.system("beat:remove-expired-signing-keys")
    with platform_context(reason="beat:remove-expired-signing-keys", actor=actor):
        removed = signing_keys_remove_expired(actor=actor)
    if removed:
        jwks_cache_clear()
    return removed


@shared_task(acks_late=True, autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=5)
def revocations_purge_task(organization_id: str) -> int:
    """Delete one organization's revocation records whose tokens have expired."""
    org_id = uuid.UUID(organization_id)
    with tenant_context(org_id):
        return revocations_purge(organization_id=org_id)


@shared_task
def revocations_purge_all_task() -> int:
    """Beat job: one purge per organization, and the deployment's spent assertions that have
    expired (``oidc.replay``)."""
    purged = assertion_uses_purge()
    if purged:
        logger.info("forgot %s expired spent assertions", purged)
    return fan_out_per_organization(revocations_purge_task, reason="beat:revocations-purge")
