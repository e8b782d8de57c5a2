"""Where the limits are kept: in process, or in Redis for `limits.backend: redis`.

The Redis modules (and the Redis client under them, about 23 MB of RSS, bench/RESULTS.md) are imported here
only for that backend, so a gateway without Redis never loads them.
"""

from __future__ import annotations

import time

from gateway_service.config import LimitSettings
from gateway_service.limits.core import Clock, Count, Limiter, no_count
from gateway_service.limits.memory import MemoryLimiter
from gateway_service.limits.spend import MemorySpendStore, SpendStore


def build_limiter(settings: LimitSettings, clock: Clock | None = None, count: Count = no_count) -> Limiter:
    """The rate budgets' limiter for `settings.backend`."""
    if settings.backend == "redis":
        from gateway_service.limits.redis_limiter import RedisLimiter

        assert settings.redis_url is not None  # config requires it with backend: redis
        return RedisLimiter(
            settings.redis_url.get_secret_value(),
            timeout_s=settings.redis_timeout_ms / 1000,
            retry_s=settings.redis_retry_s,
            clock=clock or time.time,
            count=count,
        )
    return MemoryLimiter(clock or time.monotonic)


def build_store(settings: LimitSettings) -> SpendStore:
    """The dollar budgets' store for `settings.backend`."""
    if settings.backend == "redis":
        from gateway_service.limits.spend_redis import RedisSpendStore

        assert settings.redis_url is not None  # config requires it with backend: redis
        # A reservation is on the request path once per attempt: the rate budgets' timeout, at least 100 ms.
        timeout_s = max(settings.redis_timeout_ms / 1000, 0.1)
        return RedisSpendStore(settings.redis_url.get_secret_value(), timeout_s=timeout_s)
    return MemorySpendStore()
