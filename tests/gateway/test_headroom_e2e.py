"""Headroom from the providers' own rate-limit headers, end to end: the real gateway server, the official SDKs
over real HTTP, and the simulator enforcing a limit and stating it in each provider's header format.

The upstream allows 3 requests a minute and says so (OpenAI and Groq `x-ratelimit-*`, Anthropic
`anthropic-ratelimit-*`). With no `limits:` configured, 6 sequential chats reach it exactly 3 times and it
refuses none: the other 3 skip it as FAILURE_REASON_PREDICTED_RATE_LIMIT and the fallback answers. With
`failover.rate_limit_headers: false` (today's gateway before this feature) the same 6 chats send it a 4th
request, which it refuses with 429. Garbage header values change nothing: the outcome is the one without
the feature.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
import pytest

from gateway_service import config
from llm_simulator import SimulatorHandle
from llm_simulator.ratelimit import parse_limit
from llmgateway.v1 import chat_service_pb2 as pb
from tests.gateway.e2e_helpers import Harness, Upstream, kinds, serving, stream, stream_failure, user

LIMITED_MODEL = "limited-3rpm"
FALLBACK = Upstream("fallback", "openai", "fallback-model", patient=True)
ANTHROPIC_FALLBACK = Upstream("fallback", "anthropic", "fallback-model", patient=True)


def limited(kind: str) -> Upstream:
    return Upstream("limited", kind, LIMITED_MODEL, patient=True)


@dataclass
class Run:
    served_by: list[str]  # the provider of each chat's answer
    upstream_429s: int  # refusals the limited upstream sent
    upstream_requests: int  # requests it got
    predicted: list[pb.Skipped]  # the skips of the limited provider as a predicted rate limit


def cfg(sim: SimulatorHandle, upstreams: list[Upstream], **failover: object) -> config.GatewayConfig:
    data = {
        "providers": [u.entry(sim.base_url) for u in upstreams],
        "routes": {"default": [f"{u.name}/{u.model}" for u in upstreams]},
        "failover": {"min_attempt_budget_s": 0.01, **failover},
    }
    return config.parse(data, source="test", env={"SIM_KEY": "sk-sim-key-1234"})


async def six_chats(sim: SimulatorHandle, h: Harness, **options: int) -> Run:
    served: list[str] = []
    predicted: list[pb.Skipped] = []
    for n in range(6):
        request = pb.StreamChatRequest(model="default", messages=user(f"chat {n}"), **options)
        events = await stream(h, request)
        assert kinds(events)[-1] == "done", kinds(events)
        started = [e.started for e in events if e.HasField("started")]
        served.append(started[-1].provider)
        skipped = [s for st in started for s in st.skipped]
        predicted += [s for s in skipped if s.reason == pb.FAILURE_REASON_PREDICTED_RATE_LIMIT]
    seen = [o for o in sim.simulator.observations if o.model == LIMITED_MODEL]
    return Run(served, sum(o.status == 429 for o in seen), len(seen), predicted)


async def run(sim: SimulatorHandle, kind: str, limit: str, *, headers: bool = True, **options: int) -> Run:
    fallback = ANTHROPIC_FALLBACK if kind != "anthropic" else FALLBACK
    sim.simulator.clear()
    sim.simulator.set_rate_limits([parse_limit(f"{limit} model={LIMITED_MODEL}")])
    try:
        async with serving(sim, cfg(sim, [limited(kind), fallback], rate_limit_headers=headers)) as h:
            return await six_chats(sim, h, **options)
    finally:
        sim.simulator.set_rate_limits([])


# cohere: its SDK's httpx client carries the same hooks; the simulator states x-ratelimit-* for it as for OpenAI
# (whether Cohere's API sends them is not established: docs/providers.md).
@pytest.mark.parametrize("kind", ["openai", "openai_compatible", "anthropic", "cohere"])
async def test_six_chats_against_three_a_minute_get_no_429_with_headroom_and_one_without(
    sim: SimulatorHandle, kind: str
) -> None:
    with_headroom = await run(sim, kind, "requests=3 window=60")
    assert with_headroom.upstream_429s == 0
    assert with_headroom.upstream_requests == 3
    assert with_headroom.served_by == ["limited"] * 3 + ["fallback"] * 3
    assert len(with_headroom.predicted) == 3
    for skipped in with_headroom.predicted:
        assert skipped.provider == "limited" and skipped.model == LIMITED_MODEL
        assert "0 of 3 requests left" in skipped.message, skipped.message
        wait = skipped.retry_after.ToTimedelta().total_seconds()
        assert 30 < wait <= 61, wait  # when the upstream's window is whole again, as its headers said

    without = await run(sim, kind, "requests=3 window=60", headers=False)
    assert without.upstream_429s == 1  # the 4th chat; its Retry-After then cools the provider down
    assert without.upstream_requests == 4
    assert without.predicted == []
    assert without.served_by == ["limited"] * 3 + ["fallback"] * 3


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_garbage_header_values_change_nothing(sim: SimulatorHandle, kind: str) -> None:
    garbage = await run(sim, kind, "requests=3 window=60 garbage=1")
    without = await run(sim, kind, "requests=3 window=60", headers=False)
    assert (garbage.upstream_requests, garbage.upstream_429s, garbage.predicted) == (4, 1, [])
    assert garbage.served_by == without.served_by


async def test_no_headers_at_all_change_nothing(sim: SimulatorHandle) -> None:
    """Gemini states no headroom: its 429's RetryInfo is what the gateway learns, as before."""
    quiet = await run(sim, "gemini", "requests=3 window=60")
    assert (quiet.upstream_requests, quiet.upstream_429s, quiet.predicted) == (4, 1, [])
    assert quiet.served_by == ["limited"] * 3 + ["fallback"] * 3


async def test_tokens_left_below_the_estimate_skip_before_the_429(sim: SimulatorHandle) -> None:
    """1000 tokens a minute, each chat asking for up to 400 output tokens: two fit, the third would not."""
    tokens = await run(sim, "openai", "tokens=1000 window=60", max_output_tokens=400)
    assert tokens.upstream_429s == 0
    assert tokens.upstream_requests == 2
    assert tokens.served_by == ["limited"] * 2 + ["fallback"] * 4
    assert "tokens left" in tokens.predicted[0].message, tokens.predicted[0].message


async def test_a_route_with_no_headroom_left_answers_resource_exhausted_with_the_reset(sim: SimulatorHandle) -> None:
    sim.simulator.clear()
    sim.simulator.set_rate_limits([parse_limit(f"requests=1 window=60 model={LIMITED_MODEL}")])
    try:
        async with serving(sim, cfg(sim, [limited("openai")])) as h:
            await stream(h, pb.StreamChatRequest(model="default", messages=user("one")))
            failed = await stream_failure(h, pb.StreamChatRequest(model="default", messages=user("two")))
    finally:
        sim.simulator.set_rate_limits([])
    assert failed.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert failed.info.reason == "ALL_PROVIDERS_RATE_LIMITED"
    assert failed.info.metadata["attempts"] == "0"
    assert "predicted rate limit" in failed.info.metadata["skipped_1"]
    assert failed.retry is not None and 30 < failed.retry.retry_delay.ToTimedelta().total_seconds() <= 61
    assert [o.status for o in sim.simulator.observations] == [200]


async def test_concurrent_chats_take_their_share_before_any_response_says_what_is_left(sim: SimulatorHandle) -> None:
    """Once one response stated the limit, 5 chats at once send it only the 2 requests left: each attempt
    takes its share as it starts, before its own response comes back."""
    sim.simulator.clear()
    sim.simulator.set_rate_limits([parse_limit(f"requests=3 window=60 model={LIMITED_MODEL}")])
    try:
        async with serving(sim, cfg(sim, [limited("openai"), ANTHROPIC_FALLBACK])) as h:
            await stream(h, pb.StreamChatRequest(model="default", messages=user("first")))
            requests = [pb.StreamChatRequest(model="default", messages=user(f"at once {n}")) for n in range(5)]
            answers = await asyncio.gather(*(stream(h, r) for r in requests))
    finally:
        sim.simulator.set_rate_limits([])
    assert all(kinds(events)[-1] == "done" for events in answers)
    seen = [o.status for o in sim.simulator.observations if o.model == LIMITED_MODEL]
    assert seen == [200, 200, 200]
    served = [[e.started.provider for e in events if e.HasField("started")][-1] for events in answers]
    assert sorted(served) == ["fallback"] * 3 + ["limited"] * 2
