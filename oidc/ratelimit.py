"""Token-endpoint admission: rate limits, failed-authentication throttle, monthly quota.

One Redis round trip (a Lua script) decides per request, before any database work:
token buckets per client and per organization (rates from the organization's plan), a
throttle on repeated failed authentications for the client_id, and the organization's
``max_tokens_per_month``. Issued tokens are counted in Redis after commit; a beat task
persists the monthly counters, so the hot path writes nothing to the database for quotas.
"""

import time
from dataclasses import dataclass
from uuid import UUID

from prometheus_client import Counter
from redis.commands.core import Script

from agentidp.usage import last_used_key, redis_client, usage_key

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
local used = tonumber(redis.call('GET', KEYS[4]) or '0')
if used >= tonumber(ARGV[7]) then
  return {'quota', 3600}
end
local wait = bucket(KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
if wait > 0 then return {'client', math.ceil(wait)} end
wait = bucket(KEYS[2], tonumber(ARGV[4]), tonumber(ARGV[5]))
if wait > 0 then return {'organization', math.ceil(wait)} end
return {'ok', 0}
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
    """Whether a token request may proceed; when not, which limit and for how long."""

    allowed: bool
    limit: str = ""
    retry_after: int = 0


def token_request_admit(
    *, client_id: str, organization_id: UUID, plan: str, max_tokens_per_month: int
) -> Admission:
    client_rate, client_burst, org_rate, org_burst = PLAN_RATES.get(plan, PLAN_RATES["free"])
    result = _admit_script()(
        keys=[
            f"agentidp:bucket:client:{client_id[:100]}",
            f"agentidp:bucket:org:{organization_id}",
            _failures_key(client_id),
            usage_key(organization_id),
        ],
        args=[time.time(), client_rate, client_burst, org_rate, org_burst,
              FAILED_AUTH_LIMIT, max_tokens_per_month],
    )  # fmt: skip
    verdict, wait = result[0].decode(), int(result[1])
    if verdict == "ok":
        return Admission(allowed=True)
    RATE_LIMITED.labels(limit=verdict).inc()
    return Admission(allowed=False, limit=verdict, retry_after=max(wait, 1))


def token_issued_count(*, organization_id: UUID, credential_id: UUID | None) -> None:
    """Count an issued token against the month and note when its secret was used
    (called after commit; one Redis round trip)."""
    pipe = redis_client().pipeline(transaction=False)
    key = usage_key(organization_id)
    pipe.incr(key)
    pipe.expire(key, 40 * 86400)
    if credential_id is not None:
        pipe.hset(last_used_key(organization_id), str(credential_id), str(int(time.time())))
    pipe.execute()


def failed_authentication_count(client_id: str) -> None:
    # SET NX EX starts the window on the first failure (EXPIRE NX needs Redis 7; the embedded
    # server make run uses is 6.2)
    pipe = redis_client().pipeline(transaction=False)
    key = _failures_key(client_id)
    pipe.set(key, 0, ex=FAILED_AUTH_WINDOW, nx=True)
    pipe.incr(key)
    pipe.execute()
