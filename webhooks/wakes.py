"""Queueing the relay and the senders: at most one queued task per organization and kind.

A flag in Redis (``SET NX`` with an expiry) marks a task queued; the task clears it before it
reads anything, so work committed after that is covered by the next wake, and work committed
before it by the task itself. When Redis (the broker too) is down, nothing is queued: the
events and deliveries wait in the database for the beat job that picks up due work.
"""

import logging
import uuid

from celery import current_app
from kombu.exceptions import OperationalError
from redis import RedisError

from agentidp.usage import redis_client

logger = logging.getLogger("agentidp.webhooks")

RELAY_TASK = "webhooks.tasks.relay_task"
SEND_TASK = "webhooks.tasks.deliveries_send_task"
FLAG_SECONDS = 10


def _flag(kind: str, organization_id: uuid.UUID | str) -> str:
    return f"agentidp:webhooks:{kind}-queued:{organization_id}"


def _wake(kind: str, task: str, organization_id: uuid.UUID) -> None:
    try:
        if redis_client().set(_flag(kind, organization_id), 1, nx=True, ex=FLAG_SECONDS):
            current_app.send_task(task, args=[str(organization_id)])
    except (RedisError, OperationalError, OSError) as exc:
        logger.warning("could not queue %s for %s (beat will): %s", kind, organization_id, exc)


def relay_wake_now(organization_id: uuid.UUID) -> None:
    """Queue the relay for the organization unless one is already queued."""
    _wake("relay", RELAY_TASK, organization_id)


def deliveries_wake(organization_id: uuid.UUID) -> None:
    """Queue the sender for the organization unless one is already queued."""
    _wake("send", SEND_TASK, organization_id)


def wake_flag_clear(kind: str, organization_id: str) -> None:
    """Called by a task as it starts: a wake from now on queues another run."""
    try:
        redis_client().delete(_flag(kind, organization_id))
    except RedisError:
        logger.warning("could not clear the %s flag of %s", kind, organization_id)
