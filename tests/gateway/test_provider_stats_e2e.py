"""Statistics worth watching, end to end: per provider and model, over the real gateway server, the official
SDKs and the simulator. ListProviders shows each model's state and cooldown end, its 1/5/60-minute windows
with errors by kind, TTFT p50/p95, tokens per second, headroom from the provider's own headers, prices and
streams in flight; the Prometheus registry shows the same."""

from __future__ import annotations

import asyncio

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway_service import config
from llm_simulator import SimulatorHandle
from llm_simulator.ratelimit import parse_limit
from llmgateway.v1 import chat_service_pb2 as pb
from llmgateway.v1 import provider_service_pb2 as ppb
from tests.gateway.e2e_helpers import Harness, Upstream, serving, stream, user

PRIMARY = Upstream("p", "openai", "primary", patient=True)
FALLBACK = Upstream("f", "anthropic", "fallback", patient=True)


def cfg(sim: SimulatorHandle) -> config.GatewayConfig:
    data = {
        "providers": [u.entry(sim.base_url) for u in (PRIMARY, FALLBACK)],
        "routes": {"default": ["p/primary", "f/fallback"]},
        "failover": {"min_attempt_budget_s": 0.01},
    }
    return config.parse(data, source="test", env={"SIM_KEY": "sk-sim-key-1234"})


async def listed(h: Harness) -> dict[str, ppb.Provider]:
    response = await h.providers.ListProviders(ppb.ListProvidersRequest(), timeout=2)
    return {p.name: p for p in response.providers}


def metrics(h: Harness) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(h.running.metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("llm_gateway_model_")
    }


def sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(f"llm_gateway_model_{name}", tuple(sorted(labels.items())))]


async def test_list_providers_and_metrics_show_each_models_recent_statistics(sim: SimulatorHandle) -> None:
    sim.simulator.clear()
    sim.simulator.set_rate_limits([parse_limit("requests=3 window=60 model=primary")])
    try:
        async with serving(sim, cfg(sim)) as h:
            await stream(h, pb.StreamChatRequest(model="default", messages=user("a [[fault:500 model=primary]]")))
            for text in ("b", "c"):
                await stream(h, pb.StreamChatRequest(model="default", messages=user(text)))
            providers = await listed(h)
            samples = metrics(h)
    finally:
        sim.simulator.set_rate_limits([])

    p, f = providers["p"], providers["f"]
    [primary] = p.models
    # Three requests reached it (the 500, then two answers) and its headers now say none is left.
    assert primary.health == ppb.HEALTH_STATE_COOLING_DOWN and primary.cooldown_until.seconds > 0
    assert p.health == ppb.HEALTH_STATE_COOLING_DOWN
    one_minute = primary.stats.windows[0]
    assert one_minute.window.seconds == 60 and [w.window.seconds for w in primary.stats.windows] == [60, 300, 3600]
    assert (one_minute.requests, one_minute.failures) == (3, 1)
    assert abs(one_minute.success_rate - 2 / 3) < 1e-9
    assert [(e.reason, e.count) for e in one_minute.errors] == [(pb.FAILURE_REASON_SERVER_ERROR, 1)]
    assert 0 < primary.stats.ttft_p50_ms <= primary.stats.ttft_p95_ms
    assert primary.stats.output_tokens_per_second > 0 and primary.stats.in_flight == 0
    assert (primary.input_usd_per_mtok, primary.output_usd_per_mtok) == (1.0, 2.0)
    [requests] = [r for r in primary.headroom if r.limit == "requests"]
    assert (requests.remaining, requests.limit_value) == (0, 3) and requests.resets_at.seconds > 0
    # The provider's windows add up its models'; the fallback answered the first chat.
    assert [(w.requests, w.failures) for w in p.stats.windows] == [(3, 1)] * 3
    [fallback] = f.models
    assert fallback.health == ppb.HEALTH_STATE_HEALTHY and fallback.stats.windows[0].requests == 1
    assert len(fallback.headroom) == 0  # the simulator stated no limit for it

    pm = {"provider": "p", "model": "primary"}
    assert sample(samples, "health", **pm, state="cooling_down") == 1
    until = primary.cooldown_until.ToNanoseconds() / 1e9
    assert abs(sample(samples, "cooldown_until_timestamp_seconds", **pm) - until) < 1  # read a moment apart
    assert sample(samples, "window_attempts", **pm, window="1m") == 3
    assert sample(samples, "window_failures", **pm, window="60m", reason="server_error") == 1
    assert abs(sample(samples, "success_ratio", **pm, window="5m") - 2 / 3) < 1e-9
    assert sample(samples, "ttft_seconds", **pm, quantile="0.5") == primary.stats.ttft_p50_ms / 1000
    assert sample(samples, "output_tokens_per_second", **pm) == primary.stats.output_tokens_per_second
    assert sample(samples, "headroom_remaining", **pm, limit="requests") == 0
    assert sample(samples, "headroom_limit", **pm, limit="requests") == 3
    assert sample(samples, "price_usd_per_mtok", **pm, type="output") == 2.0
    assert sample(samples, "in_flight", **pm) == 0


async def test_streams_in_flight_show_while_they_run(sim: SimulatorHandle) -> None:
    sim.simulator.clear()
    async with serving(sim, cfg(sim)) as h:
        request = pb.StreamChatRequest(model="f/fallback", messages=user("one two three [[fault:stall at=1]]"))
        call = h.chat.StreamChat(request, timeout=10)
        async for event in call:
            if event.HasField("delta"):
                break
        providers = await listed(h)
        samples = metrics(h)
        call.cancel()
        await asyncio.wait_for(sim.simulator.observations[0].done.wait(), 5)
        after = await listed(h)
    assert providers["f"].models[0].stats.in_flight == 1 and providers["f"].stats.in_flight == 1
    assert sample(samples, "in_flight", provider="f", model="fallback") == 1
    assert after["f"].models[0].stats.in_flight == 0
    assert [w.requests for w in after["f"].models[0].stats.windows] == [0, 0, 0]  # cancelled: no verdict


async def test_watch_providers_sends_a_model_going_out_of_headroom(sim: SimulatorHandle) -> None:
    sim.simulator.clear()
    sim.simulator.set_rate_limits([parse_limit("requests=2 window=60 model=primary")])
    try:
        async with serving(sim, cfg(sim)) as h:
            watch = h.providers.WatchProviders(ppb.WatchProvidersRequest(), timeout=10)
            initial = [(await watch.read()).provider for _ in range(2)]
            assert [(p.name, p.models[0].health) for p in initial] == [
                ("p", ppb.HEALTH_STATE_HEALTHY),
                ("f", ppb.HEALTH_STATE_HEALTHY),
            ]
            for text in ("one", "two"):
                await stream(h, pb.StreamChatRequest(model="default", messages=user(text)))
            changed = (await watch.read()).provider  # the first change: the second answer left it none
            watch.cancel()
    finally:
        sim.simulator.set_rate_limits([])
    assert changed.name == "p" and changed.health == ppb.HEALTH_STATE_COOLING_DOWN
    [model] = changed.models
    assert model.health == ppb.HEALTH_STATE_COOLING_DOWN and model.cooldown_until.seconds > 0
    assert [(r.limit, r.remaining, r.limit_value) for r in model.headroom if r.limit == "requests"] == [
        ("requests", 0, 2)
    ]
