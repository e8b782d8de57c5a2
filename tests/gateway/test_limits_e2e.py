"""Rate-limit budgets end to end: the real gateway server, real SDKs and the simulator over HTTP on 127.0.0.1.

A provider whose budget has no room is skipped before any HTTP request (so it never gets to answer
429); when no candidate has room, or the caller's user_id is over its budget, the call ends with
RESOURCE_EXHAUSTED, RetryInfo and a QuotaFailure naming what ran out.
"""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway_service import config
from gateway_service.domain.request import ChatRequest, Message, Role
from gateway_service.limits.redis_limiter import RedisLimiter
from llm_simulator import SimulatorHandle
from llmgateway.v1 import chat_service_pb2 as pb
from llmgateway.v1 import provider_service_pb2 as ppb
from tests.gateway.e2e_helpers import Failed, Harness, Upstream, details, serving, user
from tests.redisserver import redis_url

PRIMARY = Upstream("p", "openai", "primary", patient=True)
FALLBACK = Upstream("f", "anthropic", "fallback", patient=True)
REDIS_URL = redis_url()


def limited_config(
    sim: SimulatorHandle,
    budgets: dict[str, dict[str, int]],
    limits: dict[str, Any] | None = None,
    model_budgets: dict[str, dict[str, int]] | None = None,
) -> config.GatewayConfig:
    """PRIMARY then FALLBACK as `default`, with provider (and model) `limits:` and the top-level `limits:` section."""
    providers = [u.entry(sim.base_url) for u in (PRIMARY, FALLBACK)]
    for entry in providers:
        if entry["name"] in budgets:
            entry["limits"] = budgets[entry["name"]]
        if entry["name"] in (model_budgets or {}):
            entry["models"][0]["limits"] = (model_budgets or {})[entry["name"]]
    data = {
        "providers": providers,
        "routes": {"default": ["p/primary", "f/fallback"]},
        "failover": {"min_attempt_budget_s": 0.01},
        "limits": limits or {},
    }
    return config.parse(data, source="test", env={"SIM_KEY": "sk-sim-key-1234"})


@contextlib.asynccontextmanager
async def limited(sim: SimulatorHandle, cfg: config.GatewayConfig, clear: bool = True) -> AsyncIterator[Harness]:
    if clear:
        sim.simulator.clear()
    async with serving(sim, cfg) as harness:
        yield harness


async def chat(h: Harness, text: str = "hi", user_id: str = "") -> pb.ChatResponse:
    response: pb.ChatResponse = await h.chat.Chat(
        pb.ChatRequest(model="default", messages=user(text), user_id=user_id), timeout=5
    )
    return response


async def refused(h: Harness, request: pb.ChatRequest | pb.StreamChatRequest) -> tuple[Failed, list[Any]]:
    """The details of a call that must fail, and its QuotaFailure violations as (subject, description)."""
    call: Any = h.chat.Chat if isinstance(request, pb.ChatRequest) else h.chat.StreamChat
    try:
        result = call(request, timeout=5)
        events = [e async for e in result] if isinstance(request, pb.StreamChatRequest) else [await result]
    except grpc.aio.AioRpcError as error:
        status = rpc_status.from_call(error)
        assert status is not None
        violations = []
        for detail in status.details:
            if detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
                quota = error_details_pb2.QuotaFailure()
                detail.Unpack(quota)
                violations = [(v.subject, v.description) for v in quota.violations]
        return details(error, []), violations
    raise AssertionError(f"call succeeded: {events}")


def retry_s(failed: Failed) -> float:
    assert failed.retry is not None, "no RetryInfo"
    return failed.retry.retry_delay.seconds + failed.retry.retry_delay.nanos / 1e9


def models_called(sim: SimulatorHandle) -> list[str]:
    return [o.model for o in sim.simulator.observations]


async def test_a_provider_over_budget_is_skipped_without_a_request_and_shows_as_cooling_down(
    sim: SimulatorHandle,
) -> None:
    async with limited(sim, limited_config(sim, {"p": {"requests_per_minute": 1}})) as h:
        assert (await chat(h)).provider == "p"
        second = await chat(h)
        assert second.provider == "f" and [(a.provider, a.attempt) for a in second.attempts] == [("f", 1)]
        assert models_called(sim) == ["primary", "fallback"]  # the primary never got the request it would 429

        listed = {p.name: p for p in (await h.providers.ListProviders(ppb.ListProvidersRequest(), timeout=2)).providers}
        assert listed["p"].health == ppb.HEALTH_STATE_COOLING_DOWN
        assert 55 < listed["p"].cooldown_until.seconds - time.time() <= 61  # one request a minute: free in 60 s
        assert listed["f"].health == ppb.HEALTH_STATE_HEALTHY

        # When the fallback fails too, the error says why the primary was not tried.
        failed, _ = await refused(
            h, pb.StreamChatRequest(model="default", messages=user("hi [[fault:500 model=fallback]]"))
        )
        assert failed.code == grpc.StatusCode.UNAVAILABLE and failed.info.reason == "ALL_PROVIDERS_FAILED"
        skipped = failed.info.metadata["skipped_1"]
        assert skipped.startswith("p/primary budget_exhausted: provider:p requests_per_minute budget of 1 used up")
        assert failed.info.metadata["attempt_1"].startswith("f/fallback server_error")


@pytest.mark.parametrize("kind", ["Chat", "StreamChat"])
async def test_every_candidate_over_budget_is_resource_exhausted_with_retry_info(
    sim: SimulatorHandle, kind: str
) -> None:
    cfg = limited_config(sim, {"p": {"requests_per_minute": 1}}, model_budgets={"f": {"requests_per_hour": 2}})
    async with limited(sim, cfg) as h:
        assert [(await chat(h)).provider for _ in range(3)] == ["p", "f", "f"]
        request_type = pb.ChatRequest if kind == "Chat" else pb.StreamChatRequest
        failed, violations = await refused(h, request_type(model="default", messages=user("hi")))
        assert failed.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert failed.info.reason == "ALL_PROVIDERS_RATE_LIMITED" and failed.info.metadata["attempts"] == "0"
        assert 55 < retry_s(failed) <= 60  # the soonest to free: the primary's one request a minute
        assert [subject for subject, _ in violations] == ["p/primary", "f/fallback"]
        assert "model:f/fallback requests_per_hour budget of 2 used up" in violations[1][1]
        assert models_called(sim) == ["primary", "fallback", "fallback"]


async def test_a_user_over_budget_gets_resource_exhausted_with_quota_failure_naming_the_user(
    sim: SimulatorHandle,
) -> None:
    limits = {"users": {"requests_per_minute": 2}, "user_overrides": {"vip": {"requests_per_minute": 3}}}
    async with limited(sim, limited_config(sim, {}, limits)) as h:
        for _ in range(2):
            await chat(h, user_id="alice")
        failed, violations = await refused(h, pb.ChatRequest(model="default", messages=user("hi"), user_id="alice"))
        assert failed.code == grpc.StatusCode.RESOURCE_EXHAUSTED and failed.info.reason == "USER_BUDGET_EXHAUSTED"
        assert failed.info.metadata["user_id"] == "alice" and failed.info.metadata["limits"] == "requests_per_minute"
        [(subject, description)] = violations
        assert subject == "user:alice" and description.startswith("requests_per_minute budget of 2 used up")
        assert 29 < retry_s(failed) <= 30  # two a minute: the next one in 30 s
        assert len(sim.simulator.observations) == 2  # the refused call reached no provider

        assert (await chat(h, user_id="bob")).provider == "p"  # each user_id has its own budget
        for _ in range(3):
            await chat(h, user_id="vip")
        failed, violations = await refused(h, pb.StreamChatRequest(model="default", messages=user("x"), user_id="vip"))
        assert failed.info.reason == "USER_BUDGET_EXHAUSTED" and violations[0][0] == "user:vip"


async def test_token_budgets_take_an_estimate_first_and_the_reported_usage_after(sim: SimulatorHandle) -> None:
    prompt = "one two three four five six seven eight"
    estimate = (len(prompt) + 3) // 4
    async with limited(sim, limited_config(sim, {"p": {"tokens_per_minute": 40}})) as h:
        first = await chat(h, prompt)
        used = first.usage.input_tokens + first.usage.output_tokens
        # Estimates alone would let a third call in (3 x 10 <= 40); the reported usage does not.
        assert first.provider == "p" and used + estimate <= 40 < 2 * used + estimate and 3 * estimate <= 40
        assert (await chat(h, prompt)).provider == "p"
        third = await chat(h, prompt)
        assert third.provider == "f"


async def test_a_failed_attempt_gives_its_token_estimate_back(sim: SimulatorHandle) -> None:
    failing = "hi [[fault:429 retry_after=0 model=primary]]"
    plain = "x" * 40
    estimates = [(len(text) + 3) // 4 for text in (failing, plain)]
    assert sum(estimates) > 20 >= estimates[1]  # had the 429 kept its estimate, the second call would not fit
    async with limited(sim, limited_config(sim, {"p": {"tokens_per_minute": 20}})) as h:
        first = await chat(h, failing)
        assert [(a.provider, a.failure_reason) for a in first.attempts] == [
            ("p", pb.FAILURE_REASON_RATE_LIMITED),
            ("f", pb.FAILURE_REASON_UNSPECIFIED),
        ]
        assert (await chat(h, plain)).provider == "p"


async def test_watchers_hear_when_a_budget_runs_out(sim: SimulatorHandle) -> None:
    async with limited(sim, limited_config(sim, {"p": {"requests_per_minute": 1}})) as h:
        watch = h.providers.WatchProviders(ppb.WatchProvidersRequest(), timeout=10)
        initial = [(await watch.read()).provider for _ in range(2)]
        healthy = ppb.HEALTH_STATE_HEALTHY
        assert [(p.name, p.health) for p in initial] == [("p", healthy), ("f", healthy)]
        await chat(h)  # statistics alone are no change: nothing is sent
        await chat(h)
        change = (await watch.read()).provider
        assert (change.name, change.health) == ("p", ppb.HEALTH_STATE_COOLING_DOWN)
        watch.cancel()


@contextlib.asynccontextmanager
async def redis_prefix() -> AsyncIterator[str]:
    prefix = f"test-limits-e2e-{uuid.uuid4().hex[:12]}"
    try:
        yield prefix
    finally:
        client = aioredis.Redis.from_url(REDIS_URL)
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_two_gateways_share_budgets_in_redis(sim: SimulatorHandle) -> None:
    async with redis_prefix() as prefix:
        limits = {"backend": "redis", "redis_url": REDIS_URL, "key_prefix": prefix, "users": {"requests_per_minute": 1}}
        cfg = limited_config(sim, {"p": {"requests_per_minute": 1}}, limits)
        async with limited(sim, cfg) as one, limited(sim, cfg, clear=False) as two:
            assert (await chat(one, user_id="alice")).provider == "p"
            request = pb.ChatRequest(model="default", messages=user("hi"), user_id="alice")
            failed, violations = await refused(two, request)
            assert failed.info.reason == "USER_BUDGET_EXHAUSTED" and violations[0][0] == "user:alice"
            # The other replica used the primary's one request of the minute: this one goes to the fallback.
            assert (await chat(two, user_id="bob")).provider == "f"


async def test_redis_unreachable_lets_calls_through(sim: SimulatorHandle, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    limits = {"backend": "redis", "redis_url": f"redis://127.0.0.1:{port}/0", "users": {"requests_per_minute": 1}}
    async with limited(sim, limited_config(sim, {"p": {"requests_per_minute": 1}}, limits)) as h:
        answered: Sequence[pb.ChatResponse] = [await chat(h, user_id="alice") for _ in range(3)]
        assert [r.provider for r in answered] == ["p", "p", "p"]
        budgets = h.running.gateway.budgets
        assert budgets is not None and isinstance(budgets.limiter, RedisLimiter)
        assert budgets.limiter.fail_open_total >= 3
    assert any("Redis unreachable" in r.getMessage() for r in caplog.records)


async def test_without_limits_nothing_is_built_and_nothing_is_taken(sim: SimulatorHandle) -> None:
    async with limited(sim, limited_config(sim, {})) as h:
        gateway = h.running.gateway
        assert gateway.budgets is None and gateway.failover.budgets is None and gateway.router.budgets is None
        candidates = gateway.router.candidates(gateway_request())
        assert [c.budget for c in candidates] == [(), ()]
        assert [(await chat(h, user_id="alice")).provider for _ in range(3)] == ["p", "p", "p"]


def gateway_request() -> ChatRequest:
    return ChatRequest(model="default", messages=(Message(Role.USER, "hi"),), request_id="r")
