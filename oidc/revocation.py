"""The revocation list: the database records every revoked token, Redis caches the list.

``oidc_revokedtoken`` holds each revoked token until it would have expired; it is the record.
Redis holds one key per revoked ``jti`` (expiring with the token) and a marker saying the list
is loaded. A check is one Redis round trip asking for both. A Redis that has lost the list
(restarted without its data, flushed, replaced) has no marker, and the list is rebuilt from the
database before the check answers, so a revoked token never comes back to life.

Revocations write Redis inside the revoking transaction, before it commits: if Redis is down
the revocation fails (503) and nothing is applied, and a listed jti whose transaction then fails
to commit only refuses a token its client asked to revoke anyway.
"""

import time
from collections.abc import Iterable
from typing import cast

from django.db import connection
from prometheus_client import Counter

from agentidp.usage import redis_client

PREFIX = "agentidp:revoked:jti:"
LOADED = "agentidp:revoked:loaded"
REBUILDS = Counter(
    "agentidp_revocation_cache_rebuilds_total",
    "Rebuilds of the Redis revocation list from the database.",
)


def _ttl(expires_at: int) -> int:
    return max(int(expires_at - time.time()) + 120, 1)


def jtis_cache(entries: Iterable[tuple[str, int]]) -> None:
    """List each ``(jti, expires_at epoch)`` in Redis until shortly after its expiry."""
    pipe = redis_client().pipeline(transaction=False)
    count = 0
    for jti, expires_at in entries:
        pipe.set(PREFIX + jti, b"1", ex=_ttl(expires_at))
        count += 1
    if count:
        pipe.execute()


def jti_revoke(jti: str, *, expires_at: int) -> None:
    """List one ``jti`` in the cache (its database row is written by the revoking service)."""
    jtis_cache([(jti, expires_at)])


def revocation_cache_rebuild() -> int:
    """Load every live revocation from the database into Redis, then mark the list loaded."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT jti, expires_at FROM oidc_revocations_live()")
        rows = cursor.fetchall()
    jtis_cache((str(jti), int(expires.timestamp())) for jti, expires in rows)
    redis_client().set(LOADED, b"1")
    REBUILDS.inc()
    return len(rows)


def jti_is_revoked(jti: str) -> bool:
    """Whether ``jti`` is revoked; raises ``RedisError`` when Redis cannot be asked.

    One command (``MGET``) asks for the jti and the loaded marker together."""
    listed, loaded = cast(list[bytes | None], redis_client().mget([PREFIX + jti, LOADED]))
    if listed:
        return True
    if loaded:
        return False
    revocation_cache_rebuild()
    return bool(redis_client().exists(PREFIX + jti))
