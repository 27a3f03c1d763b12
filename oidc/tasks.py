"""Celery tasks of the authorization server (schedule them in the admin with django-celery-beat)."""

from celery import shared_task

from agentidp.principals import Principal
from agentidp.tenancy import platform_context
from oidc.services import signing_key_rotate

REASON = "beat:rotate-signing-keys"


@shared_task(acks_late=True, autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=5)
def signing_key_rotate_task() -> str:
    """Rotate the signing keys with overlap; returns the new current kid."""
    actor = Principal.system(REASON)
    with platform_context(reason=REASON, actor=actor):
        return signing_key_rotate(actor=actor).kid
