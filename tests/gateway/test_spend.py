"""Dollar budgets that hold: reservations in Redis (and memory) under concurrency, end to end over gRPC with the
simulator, shared by two gateways, kept across a restart, and closed when Redis is gone."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis

from gateway_service import config
from gateway_service.accounting import estimate_tokens
from gateway_service.config import LimitSettings
from gateway_service.limits.spend import MemorySpendStore, Spend, SpendStore, micro_usd
from gateway_service.limits.spend_redis import RedisSpendStore
from llm_simulator import SimulatorHandle
from llmgateway.v1 import chat_service_pb2 as pb
from tests.gateway.e2e_helpers import Upstream, serving, user
from tests.gateway.test_limits_e2e import refused
from tests.redisserver import redis_url

pytestmark = pytest.mark.timeout(60)

REDIS_URL = redis_url()
PAID = Upstream("p", "openai", "primary", patient=True)


def settings(prefix: str, backend: str = "redis", **spend: Any) -> LimitSettings:
    data: dict[str, Any] = {"backend": backend, "key_prefix": prefix, "spend": spend}
    if backend == "redis":
        data["redis_url"] = REDIS_URL
    return LimitSettings.model_validate(data)


def prefix() -> str:
    return f"test-spend-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_fifty_concurrent_reservations_never_pass_the_limit(backend: str) -> None:
    limits = settings(prefix(), backend, callers={"usd_per_day": 0.01})
    # 50 calls at once open 50 Redis connections; this test is about atomicity, not latency, so the store gets
    # time enough for that on a loaded machine.
    store: SpendStore = RedisSpendStore(REDIS_URL, timeout_s=10) if backend == "redis" else MemorySpendStore()
    spend = Spend(limits, store)
    slots = spend.slots("web", "")
    try:
        results = await asyncio.gather(*(spend.reserve(slots, micro_usd(Decimal("0.0003"))) for _ in range(50)))
    finally:
        await spend.aclose()
    assert sum(1 for r in results if r == []) == 33  # 33 x $0.0003 = $0.0099 fits $0.01; a 34th would not
    refusal = next(r for r in results if r)
    assert refusal is not None and refusal[0].spent_micro == 9_900 and refusal[0].slot.subject == "caller:web"


def test_overrides_replace_what_they_name_and_users_are_kept_apart_by_caller() -> None:
    spend = Spend(
        settings(
            "p",
            "memory",
            callers={"usd_per_day": 50, "usd_per_month": 1000},
            caller_overrides={"batch": {"usd_per_day": 500}},
            users={"usd_per_day": 5},
        ),
        MemorySpendStore(),
    )
    by_key = {s.key.rsplit(":", 1)[0]: s.limit_usd for s in spend.slots("batch", "alice")}
    assert by_key == {
        "p:spend:caller:batch:day": Decimal(500),
        "p:spend:caller:batch:month": Decimal(1000),
        "p:spend:user:batch:alice:day": Decimal(5),
    }
    assert spend.slots("web", "alice")[-1].key != spend.slots("batch", "alice")[-1].key
    assert [s.subject for s in spend.slots("web", "")] == ["caller:web", "caller:web"]  # no user_id, no user budget


def spend_config(sim: SimulatorHandle, key_prefix: str, **spend: Any) -> config.GatewayConfig:
    entry = PAID.entry(sim.base_url)
    # $100 per million tokens: a short answer costs about a tenth of a cent, so a cent runs out within a dozen.
    entry["models"][0].update(input_usd_per_mtok=100, output_usd_per_mtok=100)
    data = {
        "providers": [entry],
        "routes": {"default": ["p/primary"]},
        # Dollar budgets fail closed: on a loaded test machine the default 50 ms Redis timeout would turn a slow
        # reservation into a refusal, which is not what these tests look at.
        "limits": {
            "backend": "redis",
            "redis_url": REDIS_URL,
            "key_prefix": key_prefix,
            "redis_timeout_ms": 5000,
            "spend": spend,
        },
    }
    return config.parse(data, source="test", env={"SIM_KEY": "sk-sim-key-1234"})


async def chat_cost(chat: Any, max_output_tokens: int = 20) -> Decimal | None:
    """The cost of one answered chat, or None when a dollar budget refused it."""
    request = pb.ChatRequest(model="default", messages=user("hi"), max_output_tokens=max_output_tokens)
    try:
        response = await chat.Chat(request, timeout=10)
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        return None
    return Decimal(response.usage.cost)


async def test_fifty_concurrent_chats_overspend_a_budget_by_at_most_one_reservation(sim: SimulatorHandle) -> None:
    sim.simulator.clear()
    budget = Decimal("0.01")
    async with serving(sim, spend_config(sim, prefix(), callers={"usd_per_day": budget})) as h:
        costs = await asyncio.gather(*(chat_cost(h.chat) for _ in range(50)))
        # How many of the 50 get in depends on how their reservations ($0.0021) and settlements (to $0.0008)
        # interleave: with all 50 reserved before any settles 4 fit, spread out 10, and under 10 a cent is
        # not yet spent. One at a time after them, the budget runs out within a dozen more.
        later: list[Decimal] = []
        while len(later) < 12 and (cost := await chat_cost(h.chat)) is not None:
            later.append(cost)
        failed, violations = await refused(
            h, pb.ChatRequest(model="default", messages=user("hi"), max_output_tokens=20)
        )
    answered = [c for c in costs if c is not None]
    reservation = (estimate_tokens(len("hi")) * 100 + 20 * 100) / Decimal(1_000_000)  # 20 out at most
    assert 0 < len(answered) < 50
    assert sum(answered) + sum(later) <= budget + reservation
    assert failed.info.reason == "SPEND_BUDGET_EXHAUSTED" and failed.retry is not None
    assert failed.info.metadata["budget"] == "caller: per day" and failed.info.metadata["limit_usd"] == "0.010000"
    assert violations and violations[0][0] == "caller:" and "per day; resets" in violations[0][1]


async def test_two_gateways_share_one_budget_and_a_restart_keeps_what_was_spent(sim: SimulatorHandle) -> None:
    sim.simulator.clear()
    key_prefix, budget = prefix(), Decimal("0.005")
    cfg = spend_config(sim, key_prefix, callers={"usd_per_day": budget})
    async with serving(sim, cfg) as one, serving(sim, cfg) as two:
        costs = [await chat_cost(gateway.chat) for _ in range(6) for gateway in (one, two)]
    spent = sum(c for c in costs if c is not None)
    reservation = (estimate_tokens(len("hi")) * 100 + 20 * 100) / Decimal(1_000_000)
    assert None in costs and spent <= budget + reservation  # both drew on one budget until it ran out
    assert costs[0] is not None and costs[1] is not None
    async with serving(sim, cfg) as restarted:
        assert await chat_cost(restarted.chat) is None  # what was spent is still spent


async def test_an_unreachable_redis_refuses_the_call_unless_told_to_allow_it(sim: SimulatorHandle) -> None:
    sim.simulator.clear()
    entry = PAID.entry(sim.base_url)
    for on_error, expected in (("deny", grpc.StatusCode.UNAVAILABLE), ("allow", grpc.StatusCode.OK)):
        data = {
            "providers": [entry],
            "routes": {"default": ["p/primary"]},
            "limits": {
                "backend": "redis",
                "redis_url": "redis://127.0.0.1:1/0",  # nothing listens on port 1
                "spend": {"callers": {"usd_per_day": 1}, "on_backend_error": on_error},
            },
        }
        cfg = config.parse(data, source="test", env={"SIM_KEY": "sk-sim-key-1234"})
        async with serving(sim, cfg) as h:
            try:
                await h.chat.Chat(pb.ChatRequest(model="default", messages=user("hi")), timeout=10)
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as error:
                code = error.code()
                assert "SPEND_BUDGET_UNAVAILABLE" in str(error.trailing_metadata())
        assert code == expected, on_error


async def test_settled_spend_is_the_real_cost_not_the_reservation() -> None:
    key_prefix = prefix()
    spend = Spend(settings(key_prefix, callers={"usd_per_month": 1}), RedisSpendStore(REDIS_URL, timeout_s=1))
    slots = spend.slots("web", "")
    assert await spend.reserve(slots, micro_usd(Decimal("0.2"))) == []
    spend.settle(slots, micro_usd(Decimal("0.0123")) - micro_usd(Decimal("0.2")))
    await spend.aclose()
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        stored = await client.get(slots[0].key)
        ttl_ms = await client.pttl(slots[0].key)
    finally:
        await client.aclose()
    assert int(stored) == 12_300 and ttl_ms > 86_400_000  # kept until a day after the month ends
