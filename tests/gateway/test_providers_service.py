"""ProviderService: configuration, health, statistics and prices; WatchProviders changes and shutdown."""

from __future__ import annotations

import asyncio

import grpc

from llm_simulator import SimulatorHandle
from llmgateway.v1 import chat_service_pb2 as pb
from llmgateway.v1 import provider_service_pb2 as ppb
from tests.gateway.e2e_helpers import Upstream, gateway, stream, user

UPSTREAMS = [
    Upstream("p", "openai", "primary"),
    Upstream("f", "anthropic", "fallback", patient=True),
    Upstream("g", "openai_compatible", "nokey", key_env="NO_SUCH_KEY"),
]


def by_name(response: ppb.ListProvidersResponse) -> dict[str, ppb.Provider]:
    return {p.name: p for p in response.providers}


async def test_list_providers_reports_configuration_health_stats_and_prices(sim: SimulatorHandle) -> None:
    async with gateway(sim, UPSTREAMS, route=["p/primary", "f/fallback"]) as h:
        listed = by_name(await h.providers.ListProviders(ppb.ListProvidersRequest(), timeout=2))
        assert list(listed) == ["p", "f", "g"]
        p, f, g = listed["p"], listed["f"], listed["g"]
        assert (p.type, p.configured, p.health) == (ppb.PROVIDER_TYPE_OPENAI, True, ppb.HEALTH_STATE_HEALTHY)
        assert (f.type, f.base_url) == (ppb.PROVIDER_TYPE_ANTHROPIC, sim.base_url)
        assert (g.configured, g.health, g.credential_source) == (False, ppb.HEALTH_STATE_UNCONFIGURED, "NO_SUCH_KEY")
        model = p.models[0]
        assert (model.name, model.context_window, model.input_usd_per_mtok, model.output_usd_per_mtok) == (
            "primary",
            100_000,
            1.0,
            2.0,
        )
        assert model.health == ppb.HEALTH_STATE_HEALTHY and not model.HasField("cooldown_until")
        assert [w.requests for w in model.stats.windows] == [0, 0, 0] and len(model.headroom) == 0

        await stream(
            h, pb.StreamChatRequest(model="default", messages=user("hi [[fault:429 retry_after=30 model=primary]]"))
        )
        listed = by_name(await h.providers.ListProviders(ppb.ListProvidersRequest(), timeout=2))
        p, f = listed["p"], listed["f"]
        assert p.health == ppb.HEALTH_STATE_COOLING_DOWN and p.cooldown_until.seconds > 0
        assert p.last_error.startswith("rate_limited: ") and "sk-sim-key-1234" not in p.last_error
        assert (p.stats.requests, p.stats.failures, p.stats.error_rate) == (1, 1, 1.0)
        assert f.health == ppb.HEALTH_STATE_HEALTHY and f.stats.requests == 1 and f.stats.ttft_p50_ms > 0
        assert f.stats.output_tokens > 0 and f.stats.cost_usd > 0


async def test_auth_failure_marks_the_provider_misconfigured(sim: SimulatorHandle) -> None:
    async with gateway(sim, UPSTREAMS, route=["p/primary", "f/fallback"]) as h:
        await stream(h, pb.StreamChatRequest(model="default", messages=user("hi [[fault:401 model=primary]]")))
        listed = by_name(await h.providers.ListProviders(ppb.ListProvidersRequest(), timeout=2))
        assert listed["p"].health == ppb.HEALTH_STATE_MISCONFIGURED
        assert "sk-sim-key-1234" not in listed["p"].last_error


async def test_watch_sends_state_then_changes_and_ends_at_once_on_shutdown(sim: SimulatorHandle) -> None:
    async with gateway(sim, UPSTREAMS, route=["p/primary", "f/fallback"]) as h:
        watch = h.providers.WatchProviders(ppb.WatchProvidersRequest(), timeout=10)
        initial = [(await watch.read()).provider for _ in range(3)]
        assert [(p.name, p.health) for p in initial] == [
            ("p", ppb.HEALTH_STATE_HEALTHY),
            ("f", ppb.HEALTH_STATE_HEALTHY),
            ("g", ppb.HEALTH_STATE_UNCONFIGURED),
        ]
        await stream(h, pb.StreamChatRequest(model="default", messages=user("hi [[fault:500 model=primary]]")))
        change = (await watch.read()).provider
        assert (change.name, change.health) == ("p", ppb.HEALTH_STATE_DEGRADED)
        await stream(
            h, pb.StreamChatRequest(model="default", messages=user("hi [[fault:429 retry_after=9 model=primary]]"))
        )
        change = (await watch.read()).provider
        assert (change.name, change.health) == ("p", ppb.HEALTH_STATE_COOLING_DOWN)

        await h.running.lifecycle.begin_shutdown()
        assert await asyncio.wait_for(watch.read(), 1.0) is grpc.aio.EOF
        assert await watch.code() is grpc.StatusCode.OK


def _pending_queue_getters() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if not t.done() and t.get_coro().__qualname__ == "Queue.get"]  # type: ignore[union-attr]


async def test_a_client_leaving_a_watch_leaves_no_pending_task(sim: SimulatorHandle) -> None:
    async with gateway(sim, UPSTREAMS, route=["p/primary", "f/fallback"]) as h:
        before = set(_pending_queue_getters())
        watch = h.providers.WatchProviders(ppb.WatchProvidersRequest(), timeout=10)
        for _ in range(3):
            await watch.read()
        watchers = h.running.gateway.health._watchers
        assert len(watchers) == 1
        watch.cancel()
        for _ in range(500):  # the server learns of the cancellation over the wire
            if not watchers:
                break
            await asyncio.sleep(0.01)
        assert not watchers
        await asyncio.sleep(0)  # one turn of the loop for a cancelled getter to finish
        assert set(_pending_queue_getters()) - before == set()
