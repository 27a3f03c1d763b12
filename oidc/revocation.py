"""The revocation list: revoked token ids in Redis, each kept until its token would expire."""

import time
from functools import cache

import redis
from django.conf import settings

PREFIX = "agentidp:revoked:jti:"


@cache
def redis_client() -> redis.Redis:
    client: redis.Redis = redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2
    )
    return client


def jti_revoke(jti: str, *, expires_at: int) -> None:
    """List ``jti`` as revoked until shortly after ``expires_at`` (epoch seconds)."""
    ttl = max(int(expires_at - time.time()) + 120, 1)
    redis_client().set(PREFIX + jti, b"1", ex=ttl)


def jti_is_revoked(jti: str) -> bool:
    return bool(redis_client().exists(PREFIX + jti))
