"""The rate-limit budgets themselves, against both backends: in process and a real Redis (tests/redisserver.py).

Each Redis test works under its own key prefix and deletes its keys afterwards; time is a clock the
test moves, never a sleep.
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from gateway_service.config import Rate, TelemetrySettings
from gateway_service.limits.core import Exceeded, Limiter, Slot
from gateway_service.limits.memory import MemoryLimiter
from gateway_service.limits.redis_limiter import RedisLimiter
from gateway_service.telemetry import Telemetry
from schemaservice.v1 import metrics_service_pb2 as mpb
from tests.redisserver import redis_url

REDIS_URL = redis_url()
RPM = Rate("requests_per_minute", 3, 60.0)
TPM = Rate("tokens_per_minute", 100, 60.0)


class Clock:
    """Wall-clock-like seconds that only move when the test says so."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A key prefix no other test uses; every key under it is deleted afterwards."""
    name = f"test-limits-{uuid.uuid4().hex[:12]}"
    yield name
    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=f"{name}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[Limiter]:
    made: Limiter = MemoryLimiter(clock)
    if request.param == "redis":
        made = RedisLimiter(REDIS_URL, timeout_s=2.0, retry_s=1.0, clock=clock)
    yield made
    await made.aclose()


def slot(prefix: str, rate: Rate, subject: str = "provider:p") -> Slot:
    return Slot(subject, rate, f"{prefix}:{{{subject}}}:{rate.name}")


async def settled(limiter: Limiter) -> None:
    """Redis settles in a background task; wait for it (the memory limiter settles at once)."""
    if isinstance(limiter, RedisLimiter) and limiter._settling:
        await next(iter(limiter._settling))


async def test_requests_up_to_the_limit_then_refused_until_the_bucket_refills(
    limiter: Limiter, clock: Clock, prefix: str
) -> None:
    rpm = slot(prefix, RPM)
    for _ in range(3):
        assert await limiter.acquire([(rpm, 1)]) == []
    [refused] = await limiter.acquire([(rpm, 1)])
    assert refused.slot == rpm and refused.retry_after_s == pytest.approx(20.0)  # 3 a minute: one every 20 s
    clock.now += 19.9
    assert await limiter.acquire([(rpm, 1)]) != []
    clock.now += 0.101
    assert await limiter.acquire([(rpm, 1)]) == []
    assert await limiter.acquire([(rpm, 1)]) != []


async def test_a_take_is_all_or_nothing(limiter: Limiter, prefix: str) -> None:
    rpm, tpm = slot(prefix, Rate("requests_per_minute", 2, 60.0)), slot(prefix, TPM)
    assert await limiter.acquire([(rpm, 1), (tpm, 90)]) == []
    refused = await limiter.acquire([(rpm, 1), (tpm, 20)])
    assert [e.slot for e in refused] == [tpm] and refused[0].retry_after_s == pytest.approx(6.0)
    # The refused take left the request budget alone: one request is still there, then none.
    assert await limiter.acquire([(rpm, 1)]) == []
    assert [e.slot for e in await limiter.acquire([(rpm, 1)])] == [rpm]


async def test_a_second_group_is_taken_only_once_the_first_is(limiter: Limiter, prefix: str) -> None:
    user = slot(prefix, Rate("requests_per_minute", 2, 60.0), "user:u")
    rpm_1 = Rate("requests_per_minute", 1, 60.0)
    one, two = slot(prefix, rpm_1, "provider:p"), slot(prefix, rpm_1, "provider:q")
    assert await limiter.acquire([(user, 1)], [(one, 1)]) == []
    assert [e.slot for e in await limiter.acquire([(user, 1)], [(one, 1)])] == [one]  # the user's second is taken
    assert [e.slot for e in await limiter.acquire([(user, 1)], [(two, 1)])] == [user]  # and nothing of `two`
    assert await limiter.acquire([], [(two, 1)]) == []
    assert [e.slot for e in await limiter.acquire([], [(two, 1)])] == [two]


async def test_settle_gives_back_an_overestimate_and_charges_what_was_used_beyond(
    limiter: Limiter, clock: Clock, prefix: str
) -> None:
    tpm = slot(prefix, TPM)
    assert await limiter.acquire([(tpm, 80)]) == []
    limiter.settle([(tpm, -80)])  # the attempt failed before any token was used
    await settled(limiter)
    assert await limiter.acquire([(tpm, 100)]) == []
    limiter.settle([(tpm, 50)])  # the answer used 50 tokens more than estimated: owed
    await settled(limiter)
    [refused] = await limiter.acquire([(tpm, 1)])
    assert refused.retry_after_s == pytest.approx(30.6)  # 150 + 1 tokens taken of 100: 51 more at 0.6 s each
    clock.now += 30.601
    assert await limiter.acquire([(tpm, 1)]) == []


async def test_a_full_bucket_lets_a_request_larger_than_the_budget_through_once(limiter: Limiter, prefix: str) -> None:
    tpm = slot(prefix, TPM)
    assert await limiter.acquire([(tpm, 250)]) == []
    [refused] = await limiter.acquire([(tpm, 1)])
    assert refused.retry_after_s == pytest.approx(90.6)


async def test_subjects_have_separate_budgets(limiter: Limiter, prefix: str) -> None:
    alice, bob = slot(prefix, RPM, "user:alice"), slot(prefix, RPM, "user:bob")
    for _ in range(3):
        assert await limiter.acquire([(alice, 1)]) == []
    assert await limiter.acquire([(alice, 1)]) != []
    assert await limiter.acquire([(bob, 1)]) == []


async def test_redis_keys_expire_when_their_bucket_is_full_again(clock: Clock, prefix: str) -> None:
    limiter = RedisLimiter(REDIS_URL, timeout_s=2.0, retry_s=1.0, clock=clock)
    rpm, tpm = slot(prefix, RPM), slot(prefix, TPM)
    assert await limiter.acquire([(rpm, 1), (tpm, 10)]) == []
    limiter.settle([(tpm, -10)])
    await settled(limiter)
    client = limiter.client
    assert 0 < await client.pttl(rpm.key) <= 20_001  # one request of 3 a minute: full again in 20 s
    assert not await client.exists(tpm.key)  # everything given back: the bucket is full, the key gone
    await limiter.aclose()


async def test_two_replicas_share_one_redis_budget(clock: Clock, prefix: str) -> None:
    one = RedisLimiter(REDIS_URL, timeout_s=2.0, retry_s=1.0, clock=clock)
    two = RedisLimiter(REDIS_URL, timeout_s=2.0, retry_s=1.0, clock=clock)
    rpm = slot(prefix, RPM)
    assert await one.acquire([(rpm, 1)]) == []
    assert await two.acquire([(rpm, 1)]) == []
    assert await one.acquire([(rpm, 1)]) == []
    refused: list[Exceeded] = await two.acquire([(rpm, 1)])
    assert [e.slot for e in refused] == [rpm] and refused[0].retry_after_s == pytest.approx(20.0)
    assert await one.acquire([(rpm, 1)]) != []
    await one.aclose()
    await two.aclose()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield port


async def test_redis_down_fails_open_with_a_warning_and_a_counter(
    clock: Clock, closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = RedisLimiter(f"redis://:s3cret-pass@127.0.0.1:{closed_port}/0", timeout_s=0.5, retry_s=5.0, clock=clock)
    one = slot("unused", Rate("requests_per_minute", 1, 60.0))
    with caplog.at_level(logging.WARNING, logger="gateway_service.limits.redis_limiter"):
        for _ in range(3):  # a budget of 1 a minute, yet every call goes ahead
            assert await limiter.acquire([(one, 1)]) == []
        limiter.settle([(one, 5)])  # does nothing while Redis is away, and never raises
        clock.now += 5.0
        assert await limiter.acquire([(one, 1)]) == []
    assert limiter.fail_open_total == 4
    warnings = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    # One line when Redis went away, one when the retry after `retry_s` failed again; none in between.
    assert len(warnings) == 2
    assert warnings[0].__dict__["redis"] == f"127.0.0.1:{closed_port}/0"
    assert "ConnectionError" in warnings[0].__dict__["error"]
    assert all("s3cret" not in str(r.__dict__) for r in caplog.records)
    await limiter.aclose()


async def test_fail_opens_and_lost_settles_reach_telemetry_without_the_redis_url(
    clock: Clock, closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    batches: list[mpb.WriteMetricsRequest] = []

    async def send(batch: mpb.WriteMetricsRequest) -> None:
        batches.append(batch)

    telemetry = Telemetry(TelemetrySettings(flush_interval_s=60), send)
    url = f"redis://:s3cret-pass@127.0.0.1:{closed_port}/0"
    limiter = RedisLimiter(url, timeout_s=0.5, retry_s=5.0, clock=clock, count=telemetry.count)
    one = slot("unused", Rate("requests_per_minute", 1, 60.0))
    limiter.settle([(one, 5)])  # Redis not yet known to be down: the settle is tried, and lost
    await settled(limiter)
    for _ in range(3):
        assert await limiter.acquire([(one, 1)]) == []
    await telemetry.flush()
    [batch] = batches
    sent = {m.name: (m.value, m.unit, dict(m.labels)) for m in batch.metrics}
    assert sent == {
        "llm.limits.settle_failed": (1.0, "count", {"backend": "redis"}),
        "llm.limits.fail_open": (3.0, "count", {"backend": "redis"}),  # one metric for the three calls
    }
    assert b"s3cret" not in batch.SerializeToString() and b"127.0.0.1" not in batch.SerializeToString()
    assert all("s3cret" not in str(r.__dict__) for r in caplog.records)
    await limiter.aclose()


def test_the_memory_limiter_forgets_full_buckets(clock: Clock) -> None:
    limiter = MemoryLimiter(clock)
    for n in range(1500):
        assert limiter.acquire_now([(slot("m", RPM, f"user:{n}"), 1)]) == []
    clock.now += 60.0
    assert limiter.acquire_now([(slot("m", RPM, "user:last"), 1)]) == []
    # Entries of buckets that are full again are dropped when the table grows: one-off user_ids do not pile up.
    for n in range(1500, 2100):
        limiter.acquire_now([(slot("m", RPM, f"user:{n}"), 1)])
    assert len(limiter._tat) < 1500
