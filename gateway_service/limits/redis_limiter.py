"""Budgets in Redis, shared by every gateway replica: one Lua script takes all of a request's rates atomically.

Each rate's TAT (see budgets.py) is one string key that expires when its bucket is full again, so idle
users and providers leave nothing behind. Time is the replica's wall clock (passed to the script, so
tests can move it); replicas kept in step by NTP agree to within milliseconds.

When Redis cannot be reached or answers too slowly the gateway fails OPEN: the call goes ahead
unbudgeted, a warning is logged (at most once per `retry_s`), `fail_open_total` counts it (and so does
the `llm.limits.fail_open` metric), and Redis is left alone for `retry_s` so an outage costs no
latency. Provider budgets only steer traffic away from a 429 the provider would send anyway (and
failover handles that 429), and user budgets are a fairness control: neither is worth failing every
call of every user for while the cache is down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway_service.config.limits import without_password
from gateway_service.limits.core import Charge, Clock, Count, Exceeded, no_count

log = logging.getLogger(__name__)

# KEYS: one per rate, the first group's `first` keys, then the second group's.
# ARGV: now, first, then per rate: seconds per unit, window seconds, units to take.
# Takes the first group or nothing, then (once the first is taken) the second group or nothing of it.
# Returns {index, seconds to wait, ...} of the refused group's rates: the first's when it was refused.
ACQUIRE = """
local now, first = tonumber(ARGV[1]), tonumber(ARGV[2])
local news, denied = {}, {{}, {}}
for i, key in ipairs(KEYS) do
  local per, window, cost = tonumber(ARGV[i * 3]), tonumber(ARGV[i * 3 + 1]), tonumber(ARGV[i * 3 + 2])
  local base = math.max(tonumber(redis.call('GET', key) or '0'), now)
  local new = base + cost * per
  local wait = new - window - now
  if wait > 0 and base > now then
    local group = denied[i <= first and 1 or 2]
    group[#group + 1] = i
    group[#group + 1] = string.format('%.17g', wait)
  end
  news[i] = new
end
if #denied[1] > 0 then
  return denied[1]
end
for i = 1, #denied[2] > 0 and first or #KEYS do
  redis.call('SET', KEYS[i], string.format('%.17g', news[i]), 'PX', math.ceil((news[i] - now) * 1000) + 1)
end
return denied[2]
"""

# KEYS: one per rate. ARGV: now, then per rate: seconds per unit, units used beyond (or, negative, below) the take.
SETTLE = """
local now = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local per, delta = tonumber(ARGV[i * 2]), tonumber(ARGV[i * 2 + 1])
  local new = math.max(math.max(tonumber(redis.call('GET', key) or '0'), now) + delta * per, now)
  if new > now then
    redis.call('SET', key, string.format('%.17g', new), 'PX', math.ceil((new - now) * 1000) + 1)
  else
    redis.call('DEL', key)
  end
end
return 0
"""

_UNREACHABLE = (RedisError, OSError, TimeoutError)
_LABELS = {"backend": "redis"}  # the metrics say which backend failed, never where it is (the URL may hold a password)


class RedisLimiter:
    def __init__(self, url: str, *, timeout_s: float, retry_s: float, clock: Clock, count: Count = no_count) -> None:
        self.client = aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self.where = without_password(url)
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.clock = clock
        self.count = count
        self.fail_open_total = 0
        self._acquire = self.client.register_script(ACQUIRE)
        self._settle = self.client.register_script(SETTLE)
        self._down_until = float("-inf")
        self._logged_at = float("-inf")
        self._settling: set[asyncio.Task[None]] = set()

    async def acquire(self, charges: Sequence[Charge], then: Sequence[Charge] = ()) -> list[Exceeded]:
        if not charges and not then:
            return []
        now = self.clock()
        if now < self._down_until:
            self._fail_open(now, None)
            return []
        both = [*charges, *then]
        args: list[float] = [now, len(charges)]
        for slot, cost in both:
            args += [slot.rate.window_s / slot.rate.limit, slot.rate.window_s, cost]
        try:
            async with asyncio.timeout(self.timeout_s):
                denied = await self._acquire(keys=[slot.key for slot, _ in both], args=args)
        except _UNREACHABLE as exc:
            self._down_until = now + self.retry_s
            self._fail_open(now, exc)
            return []
        return [Exceeded(both[int(denied[i]) - 1][0], float(denied[i + 1])) for i in range(0, len(denied), 2)]

    def settle(self, charges: Sequence[Charge]) -> None:
        now = self.clock()
        if now < self._down_until:
            return  # the budget is not being kept while Redis is away; nothing to square
        args: list[float] = [now]
        for slot, delta in charges:
            args += [slot.rate.window_s / slot.rate.limit, delta]
        task = asyncio.get_running_loop().create_task(self._settle_now([slot.key for slot, _ in charges], args))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle_now(self, keys: list[str], args: list[float]) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._settle(keys=keys, args=args)
        except _UNREACHABLE as exc:
            self._down_until = self.clock() + self.retry_s
            self.count("llm.limits.settle_failed", _LABELS)
            log.warning("rate-limit budgets: usage not recorded in Redis", extra=self._extra(exc))

    def _fail_open(self, now: float, exc: BaseException | None) -> None:
        self.fail_open_total += 1
        self.count("llm.limits.fail_open", _LABELS)
        if exc is not None and now - self._logged_at >= self.retry_s:
            self._logged_at = now
            log.warning(
                "rate-limit budgets unavailable (Redis unreachable); calls go ahead unbudgeted", extra=self._extra(exc)
            )

    def _extra(self, exc: BaseException) -> dict[str, object]:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return {"redis": self.where, "error": error, "fail_open_total": self.fail_open_total, "retry_s": self.retry_s}

    async def aclose(self) -> None:
        if self._settling:
            await asyncio.wait(self._settling, timeout=self.timeout_s * 2)
        await self.client.aclose()
