"""Token-endpoint admission: rate limits, failed-authentication throttle, monthly quota.

One Redis round trip (a Lua script) per token request, after the secret has been checked in
memory and before any write. For a wrong secret: the failed-authentication throttle, per
client_id and per source address (:mod:`agentidp.addresses`), answers 429 once either has
seen ``AUTH_FAILURE_LIMIT`` failures in ``AUTH_FAILURE_WINDOW_SECONDS``, and otherwise counts
the failure against both. A right secret never meets that throttle: a client_id is public (it
is in the agent's DID document) and a secret is 256 random bits, so failures by others protect
nothing by locking the client out; what they cost the server is capped per address. For a right
secret: the organization's ``max_tokens_per_month``,
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

from django.conf import settings
from prometheus_client import Counter
from redis import RedisError
from redis.commands.core import Script

from agentidp.addresses import throttle_key
from agentidp.stamps import client_records_key
from agentidp.usage import last_used_key, redis_client, usage_key

logger = logging.getLogger("agentidp.auth")

RATE_LIMITED = Counter(
    "agentidp_rate_limited_total", "Token requests refused by rate limit or quota.", ["limit"]
)
AUTH_THROTTLED = Counter(
    "agentidp_auth_throttled_total",
    "Wrong client credentials refused with 429, by the throttle that refused them (client, "
    "address).",
    ["scope"],
)

# (client rate/s, client burst, organization rate/s, organization burst) per plan
PLAN_RATES: dict[str, tuple[float, int, float, int]] = {
    "free": (5.0, 10, 20.0, 40),
    "pro": (100.0, 200, 1000.0, 2000),
    "enterprise": (1000.0, 2000, 10000.0, 20000),
}


def failed_auth_limit() -> int:
    return int(settings.AGENTIDP["AUTH_FAILURE_LIMIT"])


def failed_auth_window() -> int:
    return int(settings.AGENTIDP["AUTH_FAILURE_WINDOW_SECONDS"])


USAGE_TTL = 40 * 86400

# A wrong credential: refused with 429 while its client_id or its address is over the limit
# (the window starts with the first failure: SET NX EX; EXPIRE NX needs Redis 7 and the
# embedded server make run uses is 6.2), else counted against both and refused with 401.
FAILURE = """
local function failure(client_key, address_key, limit, window)
  local by_client = tonumber(redis.call('GET', client_key) or '0')
  local by_address = tonumber(redis.call('GET', address_key) or '0')
  if by_client >= limit or by_address >= limit then
    local wait = math.max(redis.call('TTL', client_key), redis.call('TTL', address_key), 1)
    local scope = 'client'
    if by_address >= limit then scope = 'address' end
    return {'failed_auth', wait, scope}
  end
  redis.call('SET', client_key, 0, 'EX', window, 'NX')
  redis.call('INCR', client_key)
  redis.call('SET', address_key, 0, 'EX', window, 'NX')
  redis.call('INCR', address_key)
  return {'rejected', 0}
end
"""

ADMIT = (
    FAILURE
    + """
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
if ARGV[8] == '' then
  return failure(KEYS[3], KEYS[7], tonumber(ARGV[6]), ARGV[9])
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
)

FAILURE_ONLY = (
    FAILURE
    + """
return failure(KEYS[1], KEYS[2], tonumber(ARGV[1]), ARGV[2])
"""
)

_scripts: dict[str, Script] = {}


def _registered(source: str) -> Script:
    script = _scripts.get(source)
    if script is None:
        script = _scripts[source] = redis_client().register_script(source)
    return script


def _failures_key(client_id: str) -> str:
    return f"agentidp:authfail:{client_id[:100]}"


def _address_failures_key(address: str) -> str:
    return f"agentidp:authfail-address:{throttle_key(address)}"


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
    source_address: str = "",
    reserve: bool = True,
) -> Admission:
    """Admit a request whose secret checked out as ``credential_id`` (``None``: it did not,
    and the failure is throttled or counted for the client_id and ``source_address``).

    ``reserve``: a token request, held to the rate limits and reserved against the monthly
    quota. Other client-authenticated requests (revocation, introspection) count no token."""
    client_rate, client_burst, org_rate, org_burst = PLAN_RATES.get(plan, PLAN_RATES["free"])
    usage = usage_key(organization_id)
    now = time.time()
    result = _registered(ADMIT)(
        keys=[
            f"agentidp:bucket:client:{client_id[:100]}",
            f"agentidp:bucket:org:{organization_id}",
            _failures_key(client_id),
            usage,
            last_used_key(organization_id),
            client_records_key(organization_id),
            _address_failures_key(source_address),
        ],
        args=[now, client_rate, client_burst, org_rate, org_burst, failed_auth_limit(),
              max_tokens_per_month, str(credential_id or ""), failed_auth_window(), USAGE_TTL,
              int(now), "1" if reserve else "0"],
    )  # fmt: skip
    verdict, wait = result[0].decode(), int(result[1])
    if verdict == "ok":
        stamp = result[2].decode() if len(result) > 2 else ""
        return Admission(allowed=True, reserved=usage if reserve else "", stamp=stamp)
    if verdict == "rejected":
        return Admission(allowed=False)
    if verdict == "failed_auth":
        AUTH_THROTTLED.labels(scope=result[2].decode()).inc()
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


def failed_authentication_count(client_id: str, source_address: str) -> int:
    """Throttle or count a failure for a client_id that named no usable client (the admission
    script does the rest): the seconds to wait when the client_id or the address is over the
    limit (the caller answers 429), else 0 (counted; the caller answers 401)."""
    result = _registered(FAILURE_ONLY)(
        keys=[_failures_key(client_id), _address_failures_key(source_address)],
        args=[failed_auth_limit(), failed_auth_window()],
    )
    if result[0].decode() != "failed_auth":
        return 0
    AUTH_THROTTLED.labels(scope=result[2].decode()).inc()
    RATE_LIMITED.labels(limit="failed_auth").inc()
    return max(int(result[1]), 1)
