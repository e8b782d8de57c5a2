"""RedisHealth (health/shared.py) itself: two stores in one process on a real Redis, told about attempts as failover
tells them. The two-process tests (test_shared_health.py) show the same through served gateways; these show the
rules one by one: a breaker's open and close follow, the probe has one winner, and Redis away is said once."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway_service.config import GatewayConfig, parse
from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.health import Health, Target, build_health
from servicekit.procs import free_port
from tests.redisserver import redis_url

pytestmark = pytest.mark.timeout(60)

T = Target("a", "ma", "k1")
DEADLINE_S = 20.0


def gateway_config(url: str, **failover: Any) -> GatewayConfig:
    entry = {"name": "a", "type": "openai", "no_api_key": True, "models": [{"name": "ma", "context_window": 10}]}
    limits = {"redis_url": url, "key_prefix": f"test-store-{uuid.uuid4().hex[:8]}", "redis_retry_s": 0.1}
    data = {"providers": [entry], "health": {"backend": "redis"}, "limits": limits, "failover": failover}
    return parse(data, source="test", env={})


@contextlib.asynccontextmanager
async def stores(cfg: GatewayConfig, count: int = 2) -> AsyncIterator[tuple[list[Health], list[list[bool]]]]:
    said: list[list[bool]] = [[] for _ in range(count)]
    made = [build_health(cfg, on_shared=said[i].append) for i in range(count)]
    for health in made:
        health.start()
    try:
        yield made, said
    finally:
        for health in made:
            await health.aclose()


async def until(holds: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not holds():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


def fail(health: Health, kind: FailureKind = FailureKind.SERVER_ERROR, retry_after_s: float | None = None) -> None:
    ticket = health.admit(T, 1.0)
    health.record_failure(ticket, ProviderError(kind, "boom", retry_after_s=retry_after_s), 0.01)


async def test_an_open_breaker_follows_to_the_other_store_and_so_does_its_close() -> None:
    async with stores(gateway_config(redis_url(), breaker_failures=1, breaker_open_s=0.3)) as ([one, two], said):
        await until(lambda: said == [[True], [True]], "both shared")
        fail(one)
        await until(lambda: two.breaker_state(T).phase.value == "open", "two's breaker open")
        block = two.blocked(T)
        assert block is not None and block.what == "circuit breaker open"
        # Half-open on both after 0.3 s: the first blocked() of each races for the probe, and one wins.
        await until(lambda: all(_claimed(h) for h in (one, two)), "the probe claimed")
        won = [h for h in (one, two) if h.blocked(T) is None]
        assert len(won) == 1, "both may probe"
        [lost] = [h for h in (one, two) if h is not won[0]]
        lost_block = lost.blocked(T)
        assert lost_block is not None and lost_block.what.endswith("its probe running on another replica")
        probe = won[0].admit(T, 1.0)
        assert probe.admission.probe
        won[0].record_success(probe, 0.01, 0.02)
        await until(lambda: lost.breaker_state(T).phase.value == "closed", "the close on the other")
        assert lost.blocked(T) is None and lost.recovered_at(T) is not None  # its slow ramp starts too


def _claimed(health: Health) -> bool:
    """Half-open, and this store knows who has the probe."""
    block = health.blocked(T)
    half_open = health.breaker_state(T).phase.value == "half_open"
    return half_open and (block is None or not block.what.endswith("being claimed"))


async def test_a_cooldown_keeps_its_end_and_hardness_on_the_other_store() -> None:
    async with stores(gateway_config(redis_url())) as ([one, two], said):
        await until(lambda: said == [[True], [True]], "both shared")
        fail(one, FailureKind.RATE_LIMITED, retry_after_s=30.0)
        mine = one.blocked(T)
        await until(lambda: two.blocked(T) is not None, "the cooldown on two")
        theirs = two.blocked(T)
        assert mine is not None and theirs is not None
        assert (theirs.kind, theirs.hard) == (FailureKind.RATE_LIMITED, True)
        assert abs((theirs.until - two.now()) - (mine.until - one.now())) < 0.5  # the same end, not a fresh 30 s


async def test_an_unreachable_redis_is_said_once_and_health_stays_this_stores_own() -> None:
    cfg = gateway_config(f"redis://127.0.0.1:{free_port()}/0", breaker_failures=1, breaker_open_s=0.3)
    async with stores(cfg, count=1) as ([alone], [said]):
        await until(lambda: said == [False], "Redis said away")
        for _ in range(3):
            fail(alone)
        await until(lambda: alone.blocked(T) is None, "half-open, the probe this store's own")
        assert alone.admit(T, 1.0).admission.probe
        assert said == [False]  # the listener retried every 0.1 s of the 0.3 s open, and said nothing more
