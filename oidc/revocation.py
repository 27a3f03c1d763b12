"""The revocation list: revoked token ids in Redis, each kept until its token would expire."""

import time

from agentidp.usage import redis_client

PREFIX = "agentidp:revoked:jti:"


def jti_revoke(jti: str, *, expires_at: int) -> None:
    """List ``jti`` as revoked until shortly after ``expires_at`` (epoch seconds)."""
    ttl = max(int(expires_at - time.time()) + 120, 1)
    redis_client().set(PREFIX + jti, b"1", ex=ttl)


def jti_is_revoked(jti: str) -> bool:
    return bool(redis_client().exists(PREFIX + jti))
