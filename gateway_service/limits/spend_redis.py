"""Dollar budgets kept in Redis, shared by every replica (spend.py has the model and the in-process store).

A module of its own so that the Redis client (about 23 MB of RSS once imported, bench/RESULTS.md) is imported
only by a gateway configured with `limits.backend: redis` (limits/backends.py).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from datetime import timedelta

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway_service.limits.spend import BackendDown, Refused, SpendSlot

_UNREACHABLE = (RedisError, OSError, TimeoutError)

# KEYS: one per slot. ARGV: amount, then per slot: limit, expiry (ms since the epoch).
# Takes `amount` on every slot or on none; returns {index, spent, ...} of the slots without room.
RESERVE = """
local amount = tonumber(ARGV[1])
local refused = {}
for i, key in ipairs(KEYS) do
  local spent = tonumber(redis.call('GET', key) or '0')
  if spent + amount > tonumber(ARGV[i * 2]) then
    refused[#refused + 1] = i
    refused[#refused + 1] = spent
  end
end
if #refused > 0 then
  return refused
end
for i, key in ipairs(KEYS) do
  redis.call('INCRBY', key, amount)
  redis.call('PEXPIREAT', key, ARGV[i * 2 + 1])
end
return refused
"""

# KEYS: one per slot. ARGV: delta, then per slot: expiry (ms since the epoch).
ADD = """
for i, key in ipairs(KEYS) do
  redis.call('INCRBY', key, ARGV[1])
  redis.call('PEXPIREAT', key, ARGV[i + 1])
end
return 0
"""


class RedisSpendStore:
    """Spend shared by every replica, in Redis; raises BackendDown when it cannot be reached in `timeout_s`."""

    def __init__(self, url: str, *, timeout_s: float) -> None:
        self.client = aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self.timeout_s = timeout_s
        self._reserve = self.client.register_script(RESERVE)
        self._add = self.client.register_script(ADD)

    async def reserve(self, slots: Sequence[SpendSlot], amount: int) -> list[Refused]:
        args: list[int] = [amount]
        for s in slots:
            args += [s.limit_micro, _expiry_ms(s)]
        denied = await self._call(self._reserve, [s.key for s in slots], args)
        return [Refused(slots[int(denied[i]) - 1], int(denied[i + 1])) for i in range(0, len(denied), 2)]

    async def add(self, slots: Sequence[SpendSlot], delta: int) -> None:
        await self._call(self._add, [s.key for s in slots], [delta, *(_expiry_ms(s) for s in slots)])

    async def _call(self, script: object, keys: list[str], args: list[int]) -> list[int]:
        try:
            async with asyncio.timeout(self.timeout_s):
                result: list[int] = await script(keys=keys, args=args)  # type: ignore[operator]
                return result
        except _UNREACHABLE as exc:
            raise BackendDown(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc

    async def aclose(self) -> None:
        await self.client.aclose()


def _expiry_ms(slot: SpendSlot) -> int:
    return math.ceil((slot.resets_at + timedelta(days=1)).timestamp() * 1000)
