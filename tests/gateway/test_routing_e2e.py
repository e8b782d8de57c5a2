"""Routing policies and the slow ramp end to end: the real gateway on 127.0.0.1, the official SDKs over real
HTTP to the simulator, one provider entry (and model name) per upstream so its observations tell them apart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
import yaml

from gateway_service import config
from gateway_service.errors import ConfigError
from llm_simulator import SimulatorHandle
from llmgateway.v1 import chat_service_pb2 as pb
from tests.gateway.e2e_helpers import Harness, Upstream, serving, stream, user
from tests.gateway.pipeline_helpers import Clock

KEYS = {"SIM_KEY": "sk-sim-key-1234", "SIM_KEY_2": "sk-sim-key-5678"}


def upstream(name: str) -> Upstream:
    return Upstream(name, "openai", f"model-{name}", patient=True)


def routed_config(
    sim: SimulatorHandle,
    upstreams: Sequence[Upstream],
    route: dict[str, Any],
    prices: dict[str, tuple[float, float]] | None = None,
    **sections: Any,
) -> config.GatewayConfig:
    providers = [u.entry(sim.base_url) for u in upstreams]
    for entry in providers:
        if prices is not None:
            price = prices.get(entry["name"], (0.0, 0.0))
            entry["models"][0].update(input_usd_per_mtok=price[0], output_usd_per_mtok=price[1])
    data = {
        "providers": providers,
        "routes": {"default": route},
        "failover": {"min_attempt_budget_s": 0.01, **sections.pop("failover", {})},
        **sections,
    }
    return config.parse(yaml.safe_load(yaml.safe_dump(data)), source="test", env=KEYS)


def targets(*names: str) -> list[str]:
    return [f"{n}/model-{n}" for n in names]


async def started(h: Harness, text: str = "hi", **options: Any) -> pb.Started:
    events = await stream(h, pb.StreamChatRequest(model="default", messages=user(text), **options))
    return events[0].started


def served(sim: SimulatorHandle) -> Counter[str]:
    """Completed upstream requests per model."""
    return Counter(o.model for o in sim.simulator.observations if o.outcome == "completed")


async def test_weighted_spreads_requests_over_keys_exactly_by_weight(sim: SimulatorHandle) -> None:
    sim.simulator.clear()
    # Two keys of one provider are two providers of the same upstream and model, each with its key.
    key1 = upstream("k1")
    key2 = Upstream("k2", "openai", "model-k1", key_env="SIM_KEY_2", patient=True)
    route = {"targets": ["k1/model-k1", "k2/model-k1"], "policy": "weighted", "weights": {"k1/model-k1": 2}}
    async with serving(sim, routed_config(sim, [key1, key2], route)) as h:
        first = [await started(h) for _ in range(12)]
    keys = Counter(o.headers["authorization"] for o in sim.simulator.observations)
    assert keys == {"Bearer sk-sim-key-1234": 8, "Bearer sk-sim-key-5678": 4}
    assert [s.provider for s in first[:6]] == ["k1", "k2", "k1", "k1", "k2", "k1"]  # spread, not in runs
    assert {(s.provider, s.policy, s.score) for s in first} == {
        ("k1", pb.ROUTING_POLICY_WEIGHTED, 2.0),
        ("k2", pb.ROUTING_POLICY_WEIGHTED, 1.0),
    }


async def test_weighted_shares_match_weights_over_three_upstreams(sim: SimulatorHandle) -> None:
    sim.simulator.clear()
    ups = [upstream(n) for n in "abc"]
    route = {"targets": targets("a", "b", "c"), "policy": "weighted", "weights": {"a/model-a": 3, "c/model-c": 2}}
    async with serving(sim, routed_config(sim, ups, route)) as h:
        for _ in range(30):
            await started(h)
    assert served(sim) == {"model-a": 15, "model-b": 5, "model-c": 10}


async def test_lowest_latency_prefers_the_fast_upstream_and_still_explores(sim: SimulatorHandle) -> None:
    sim.simulator.clear()
    # A second of first-token delay: far past any hiccup of the fast one on a loaded machine.
    sim.simulator.push_fault("slow ms=1000 model=model-slow", times=-1)
    ups = [upstream("slow"), upstream("fast")]
    route = {"targets": targets("slow", "fast"), "policy": "lowest_latency"}
    async with serving(sim, routed_config(sim, ups, route, routing={"exploration": 0.1})) as h:
        first = [await started(h) for _ in range(30)]
    # Request 1 measures slow (route order), 2 measures fast; then fast, but for one request in ten.
    assert [s.provider for s in first[:2]] == ["slow", "fast"]
    assert [i for i, s in enumerate(first) if s.provider == "slow"] == [0, 9, 19, 29]
    assert served(sim) == {"model-fast": 26, "model-slow": 4}
    fast = [s for s in first[2:] if s.provider == "fast"]
    assert all(s.policy == pb.ROUTING_POLICY_LOWEST_LATENCY and s.HasField("score") for s in fast)
    assert not first[0].HasField("score")  # nothing measured yet


async def test_lowest_cost_picks_the_cheapest_priced_model(sim: SimulatorHandle) -> None:
    sim.simulator.clear()
    ups = [upstream(n) for n in ("dear", "free", "cheap")]
    prices = {"dear": (5.0, 15.0), "cheap": (0.15, 0.6)}  # "free" has no prices: unknown, not cheapest
    route = {"targets": targets("dear", "free", "cheap"), "policy": "lowest_cost"}
    async with serving(sim, routed_config(sim, ups, route, prices)) as h:
        first = [await started(h, max_output_tokens=100) for _ in range(5)]
    assert served(sim) == {"model-cheap": 5}
    expected = (1 * 0.15 + 100 * 0.6) / 1e6  # "hi": one estimated input token
    assert {(s.provider, s.policy) for s in first} == {("cheap", pb.ROUTING_POLICY_LOWEST_COST)}
    assert abs(first[0].score - expected) < 1e-12


async def test_lowest_cost_fails_over_to_the_next_cheapest(sim: SimulatorHandle) -> None:
    sim.simulator.clear()
    sim.simulator.push_fault("503 model=model-cheap", times=1)
    ups = [upstream(n) for n in ("dear", "mid", "cheap")]
    prices = {"dear": (5.0, 15.0), "mid": (1.0, 2.0), "cheap": (0.15, 0.6)}
    route = {"targets": targets("dear", "mid", "cheap"), "policy": "lowest_cost"}
    async with serving(sim, routed_config(sim, ups, route, prices)) as h:
        events = await stream(h, pb.StreamChatRequest(model="default", messages=user("hi")))
    starts = [e.started.provider for e in events if e.WhichOneof("event") == "started"]
    assert starts == ["cheap", "mid"] and events[-1].done.provider == "mid"


async def test_least_busy_spreads_concurrent_streams(sim: SimulatorHandle) -> None:
    sim.simulator.clear()
    ups = [upstream(n) for n in "abc"]
    route = {"targets": targets("a", "b", "c"), "policy": "least_busy"}
    async with serving(sim, routed_config(sim, ups, route)) as h:
        calls, firsts = [], []
        for _ in range(6):  # each held open by a slow first token; the next starts once it has started
            call = h.chat.StreamChat(
                pb.StreamChatRequest(model="default", messages=user("hi [[fault:slow ms=2500]]")), timeout=10
            )
            calls.append(call)
            firsts.append((await call.read()).started)
        for call in calls:
            call.cancel()
    assert Counter(s.provider for s in firsts) == {"a": 2, "b": 2, "c": 2}
    assert [s.score for s in firsts] == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]  # streams in flight on each when chosen
    assert all(s.policy == pb.ROUTING_POLICY_LEAST_BUSY for s in firsts)


async def test_provider_order_still_wins_over_the_policy(sim: SimulatorHandle) -> None:
    sim.simulator.clear()
    ups = [upstream(n) for n in "abc"]
    route = {"targets": targets("a", "b", "c"), "policy": "weighted", "weights": {"a/model-a": 9}}
    async with serving(sim, routed_config(sim, ups, route)) as h:
        first = [await started(h, provider_order=["c"]) for _ in range(3)]
    assert {(s.provider, s.policy, s.score) for s in first} == {("c", pb.ROUTING_POLICY_CALLER_ORDER, 1.0)}


async def test_a_recovered_upstream_gets_a_growing_share_over_the_slow_ramp(sim: SimulatorHandle) -> None:
    sim.simulator.clear()
    clock = Clock()
    ups = [upstream("a"), upstream("b")]
    failover = {"breaker_failures": 1, "breaker_open_s": 1.0}
    cfg = routed_config(sim, ups, targets("a", "b"), failover=failover, routing={"slow_start_window_s": 30.0})
    async with serving(sim, cfg, health_clock=clock) as h:
        sim.simulator.push_fault("500 model=model-a", times=1)
        assert (await started(h)).provider == "a"  # fails: a's breaker opens, b answers
        assert (await started(h)).provider == "b"  # a is skipped while open
        clock.now += 1.5
        assert (await started(h)).provider == "a"  # its probe answers: the breaker closes now
        recovered = clock.now
        shares = []
        for at_s in (0.0, 15.0, 24.0, 30.0):
            clock.now = recovered + at_s
            sim.simulator.clear()
            for _ in range(10):
                await started(h)
            shares.append(served(sim)["model-a"])
    assert shares == [1, 5, 8, 10]  # of ten requests: 10 %, then 50 %, 80 % and all once the window is over


async def test_with_the_ramp_off_a_recovered_upstream_gets_everything_at_once(sim: SimulatorHandle) -> None:
    sim.simulator.clear()
    clock = Clock()
    failover = {"breaker_failures": 1, "breaker_open_s": 1.0}
    ups = [upstream("a"), upstream("b")]
    cfg = routed_config(sim, ups, targets("a", "b"), failover=failover, routing={"slow_start_window_s": 0.0})
    async with serving(sim, cfg, health_clock=clock) as h:
        sim.simulator.push_fault("500 model=model-a", times=1)
        await started(h)
        clock.now += 1.5
        assert (await started(h)).provider == "a"
        sim.simulator.clear()
        providers = [(await started(h)).provider for _ in range(5)]
    assert providers == ["a"] * 5


async def test_hedging_keys_must_not_both_be_given(sim: SimulatorHandle) -> None:
    route = {"targets": targets("a", "b"), "hedge_after_ms": 400, "hedge_after": "p95_ttft"}
    with pytest.raises(ConfigError, match="routes.default.hedge_after: give hedge_after_ms or hedge_after, not both"):
        routed_config(sim, [upstream("a"), upstream("b")], route)
