"""Token-endpoint admission: rate limits, failed-authentication throttle, monthly quota.

One Redis round trip (a Lua script) per token request, after the secret has been checked in
memory and before any write: the failed-authentication throttle for the client_id (checked
first, so a throttled client gets the same 429 whether its secret was right or wrong); for a
wrong secret, counting the failure; otherwise the organization's ``max_tokens_per_month``,
token buckets per client and per organization (rates from the organization's plan), and then
the reservation: the month's usage counter goes up and the secret's last use is noted in the
same call, which also returns the organization's client-records stamp (``agentidp.stamps``).
A request that then fails gives its reservation back
(:func:`token_request_refund`). A beat task persists the monthly counters, so the hot path
writes nothing to the database for quotas, and concurrent requests cannot overshoot a quota.
"""

import logging
import time
from dataclasses import dataclass
from uuid import UUID

from prometheus_client import Counter
from redis import RedisError
from redis.commands.core import Script

from agentidp.stamps import client_records_key
from agentidp.usage import last_used_key, redis_client, usage_key

logger = logging.getLogger("agentidp.auth")

RATE_LIMITED = Counter(
    "agentidp_rate_limited_total", "Token requests refused by rate limit or quota.", ["limit"]
)

# (client rate/s, client burst, organization rate/s, organization burst) per plan
PLAN_RATES: dict[str, tuple[float, int, float, int]] = {
    "free": (5.0, 10, 20.0, 40),
    "pro": (100.0, 200, 1000.0, 2000),
    "enterprise": (1000.0, 2000, 10000.0, 20000),
}
FAILED_AUTH_LIMIT = 10
FAILED_AUTH_WINDOW = 300

USAGE_TTL = 40 * 86400

ADMIT = """
local now = tonumber(ARGV[1])
local function bucket(key, rate, burst)
  local state = redis.call('HMGET', key, 't', 'v')
  local tokens = tonumber(state[2]) or burst
  local last = tonumber(state[1]) or now
  tokens = math.min(burst, tokens + (now - last) * rate)
  if tokens < 1 then
    return (1 - tokens) / rate
  end
  redis.call('HSET', key, 't', now, 'v', tokens - 1)
  redis.call('EXPIRE', key, math.ceil(burst / rate) + 1)
  return 0
end
local failures = tonumber(redis.call('GET', KEYS[3]) or '0')
if failures >= tonumber(ARGV[6]) then
  return {'failed_auth', redis.call('TTL', KEYS[3])}
end
if ARGV[8] == '' then
  -- SET NX EX starts the window on the first failure (EXPIRE NX needs Redis 7; the embedded
  -- server make run uses is 6.2)
  redis.call('SET', KEYS[3], 0, 'EX', ARGV[9], 'NX')
  redis.call('INCR', KEYS[3])
  return {'rejected', 0}
end
if ARGV[12] == '0' then
  -- not a token request (revocation, introspection): throttled and noted, never metered
  redis.call('HSET', KEYS[5], ARGV[8], ARGV[11])
  return {'ok', 0}
end
local used = tonumber(redis.call('GET', KEYS[4]) or '0')
if used >= tonumber(ARGV[7]) then
  return {'quota', 3600}
end
local wait = bucket(KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
if wait > 0 then return {'client', math.ceil(wait)} end
wait = bucket(KEYS[2], tonumber(ARGV[4]), tonumber(ARGV[5]))
if wait > 0 then return {'organization', math.ceil(wait)} end
redis.call('INCR', KEYS[4])
redis.call('EXPIRE', KEYS[4], ARGV[10])
redis.call('HSET', KEYS[5], ARGV[8], ARGV[11])
return {'ok', 0, redis.call('GET', KEYS[6]) or ''}
"""

_script: Script | None = None


def _admit_script() -> Script:
    global _script
    if _script is None:
        _script = redis_client().register_script(ADMIT)
    return _script


def _failures_key(client_id: str) -> str:
    return f"agentidp:authfail:{client_id[:100]}"


@dataclass(frozen=True)
class Admission:
    """The verdict on one token request.

    ``allowed``: a token may be issued and one is reserved against the month (``reserved`` is
    the counter to give it back to). ``limit``: which limit refused it, for ``retry_after``
    seconds. Neither: the secret was wrong, and the failure has been counted.
    """

    allowed: bool
    limit: str = ""
    retry_after: int = 0
    reserved: str = ""
    # The organization's client-records stamp (agentidp.stamps), read in the same call.
    stamp: str = ""


def token_request_admit(
    *,
    client_id: str,
    organization_id: UUID,
    plan: str,
    max_tokens_per_month: int,
    credential_id: UUID | None,
    reserve: bool = True,
) -> Admission:
    """Admit a request whose secret checked out as ``credential_id`` (``None``: it did not).

    ``reserve``: a token request, held to the rate limits and reserved against the monthly
    quota. Other client-authenticated requests (revocation, introspection) meet only the
    failed-authentication throttle and count no token."""
    client_rate, client_burst, org_rate, org_burst = PLAN_RATES.get(plan, PLAN_RATES["free"])
    usage = usage_key(organization_id)
    now = time.time()
    result = _admit_script()(
        keys=[
            f"agentidp:bucket:client:{client_id[:100]}",
            f"agentidp:bucket:org:{organization_id}",
            _failures_key(client_id),
            usage,
            last_used_key(organization_id),
            client_records_key(organization_id),
        ],
        args=[now, client_rate, client_burst, org_rate, org_burst, FAILED_AUTH_LIMIT,
              max_tokens_per_month, str(credential_id or ""), FAILED_AUTH_WINDOW, USAGE_TTL,
              int(now), "1" if reserve else "0"],
    )  # fmt: skip
    verdict, wait = result[0].decode(), int(result[1])
    if verdict == "ok":
        stamp = result[2].decode() if len(result) > 2 else ""
        return Admission(allowed=True, reserved=usage if reserve else "", stamp=stamp)
    if verdict == "rejected":
        return Admission(allowed=False)
    RATE_LIMITED.labels(limit=verdict).inc()
    return Admission(allowed=False, limit=verdict, retry_after=max(wait, 1))


def token_request_refund(reserved: str) -> None:
    """Give back the token a request reserved but did not issue (it failed after admission).

    Best effort: the request has already failed, and an unreachable Redis must not replace its
    answer; the month then counts one token too many, never one too few."""
    try:
        redis_client().decr(reserved)
    except RedisError:
        logger.warning("could not give back a reserved token; the month counts one extra")


def failed_authentication_count(client_id: str) -> None:
    """Count a failure for a client_id that named no usable client (the script counts the rest)."""
    pipe = redis_client().pipeline(transaction=False)
    key = _failures_key(client_id)
    pipe.set(key, 0, ex=FAILED_AUTH_WINDOW, nx=True)
    pipe.incr(key)
    pipe.execute()
