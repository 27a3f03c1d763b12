"""Celery tasks for webhooks: thin, take ids, enter the tenant context through the services.

Delivery never waits in the broker: a retry is a row with a due time, picked up by
:func:`webhooks_pump_task` (beat) or the next wake. With ``task_acks_late`` and
``task_reject_on_worker_lost`` a task whose worker dies is run again; every one of them is
idempotent (cursors and leases in the database decide what is left to do).
"""

import uuid

from celery import shared_task
from django.db import DatabaseError
from redis import RedisError

from agentidp.errors import JSONValue
from agentidp.tenancy import tenant_context
from webhooks import delivery, relay, selectors, services
from webhooks.choices import StreamName
from webhooks.streams import configured_streams
from webhooks.wakes import deliveries_wake, relay_wake_now, wake_flag_clear

PUMP_REASON = "beat:webhooks-pump"


@shared_task(
    acks_late=True, autoretry_for=(DatabaseError, RedisError), retry_backoff=True, max_retries=5
)
def relay_task(organization_id: str) -> dict[str, JSONValue]:
    """Hand the organization's new events to its subscriptions and streams."""
    wake_flag_clear("relay", organization_id)
    report = relay.relay_run(organization_id=uuid.UUID(organization_id))
    streamed: dict[str, JSONValue] = dict(report.streamed)
    return {"events": report.events, "deliveries": report.deliveries, "streamed": streamed}


@shared_task(
    acks_late=True, autoretry_for=(DatabaseError, RedisError), retry_backoff=True, max_retries=5
)
def deliveries_send_task(organization_id: str) -> dict[str, JSONValue]:
    """Send the organization's due deliveries."""
    wake_flag_clear("send", organization_id)
    report = delivery.deliveries_send(organization_id=uuid.UUID(organization_id))
    return {
        "attempted": report.attempted,
        "succeeded": report.succeeded,
        "failed": report.failed,
        "dead_lettered": report.dead_lettered,
    }


@shared_task
def webhooks_pump_task() -> dict[str, JSONValue]:
    """Beat job: queue the relay where events wait past a cursor, the sender where deliveries
    are due (retries, and anything a lost wake or a dead worker left), and forget previous
    secrets whose overlap has ended."""
    streams = [StreamName.WEBHOOKS.value, *(s.name.value for s in configured_streams())]
    relay, send = selectors.organizations_with_work(streams=streams, reason=PUMP_REASON)
    for organization_id in relay:
        relay_wake_now(uuid.UUID(organization_id))
    for organization_id in send:
        deliveries_wake(uuid.UUID(organization_id))
    expired = selectors.previous_secrets_expired(reason=PUMP_REASON)
    for org_id, subscription_id in expired:
        with tenant_context(org_id):
            services.subscription_previous_secret_expire(
                organization_id=org_id, subscription_id=subscription_id
            )
    return {"relay": len(relay), "send": len(send), "secrets_expired": len(expired)}
