"""Where token usage is counted in Redis (shared by the token endpoint and the usage task)."""

from datetime import UTC, date, datetime
from functools import cache
from uuid import UUID

import redis
from django.conf import settings


@cache
def redis_client() -> redis.Redis:
    """The process's Redis client (revocation list, rate limits, usage counters)."""
    client: redis.Redis = redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2
    )
    return client


def month_start(when: datetime | None = None) -> date:
    moment = when or datetime.now(UTC)
    return date(moment.year, moment.month, 1)


def last_used_key(organization_id: UUID) -> str:
    """Hash of credential id -> epoch seconds of its latest successful authentication."""
    return f"agentidp:secret-last-used:{organization_id}"


def previous_month(month: date) -> date:
    return date(month.year - 1, 12, 1) if month.month == 1 else date(month.year, month.month - 1, 1)


def usage_key(organization_id: UUID, month: date | None = None) -> str:
    month = month or month_start()
    return f"agentidp:usage:{organization_id}:{month:%Y%m}"
