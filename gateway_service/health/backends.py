"""Where provider health is kept: in this replica's memory, or shared through Redis for `health.backend: redis`.

The Redis modules (and the Redis client under them) are imported here only for that backend, so a gateway
without it never loads them (as limits/backends.py does for the budgets).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway_service.config import GatewayConfig
from gateway_service.config.limits import without_password
from gateway_service.health.memory import MemoryHealth

SHARED_TIMEOUT_S = 0.5  # shared health's least Redis timeout


def build_health(
    config: GatewayConfig, clock: Callable[[], float] | None = None, on_shared: Callable[[bool], None] | None = None
) -> MemoryHealth:
    """The Health for `config.health.backend`; `on_shared` hears when Redis goes away (False) and is back (True)."""
    clock = clock or time.monotonic
    if config.health.backend != "redis":
        return MemoryHealth(config.failover, clock)
    from gateway_service.health.exchange import Exchange, Message
    from gateway_service.health.shared import RedisHealth

    limits = config.limits
    assert limits.redis_url is not None  # the config requires it with health.backend: redis
    url = limits.redis_url.get_secret_value()

    def connect(apply: Callable[[Message], None]) -> Exchange:
        return Exchange(
            url,
            limits.key_prefix,
            # Off the request path: a loaded Redis is given more than the budgets' timeout before it counts as away.
            timeout_s=max(limits.redis_timeout_ms / 1000, SHARED_TIMEOUT_S),
            retry_s=limits.redis_retry_s,
            apply=apply,
            on_shared=on_shared or (lambda up: None),
            where=without_password(url),
        )

    return RedisHealth(config.failover, connect, clock)
