"""Skipped candidates on calls that succeed: the real gateway server, real SDKs and the simulator over HTTP.

A candidate the gateway passes over without a request (no key, cooling down, over its rate-limit budget,
too small a context window, no assistant prefill for CONTINUE) is listed on the next `started` event of
StreamChat (those skipped since the previous attempt) and in ChatResponse.skipped (all of them).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format

from gateway_service import config
from gateway_service.api import to_proto
from gateway_service.domain.events import AttemptRecord, SkipReason
from llm_simulator import SimulatorHandle
from llmgateway.v1 import chat_service_pb2 as pb
from tests.gateway.e2e_helpers import Harness, Upstream, kinds, serving, stream, text_of, user

PRIMARY = Upstream("p", "openai", "primary", patient=True)
FALLBACK = Upstream("f", "anthropic", "fallback", patient=True)
KEYLESS = Upstream("k", "gemini", "keyless", key_env="NO_SUCH_KEY")
NOT_CONFIGURED = pb.Skipped(
    provider="k", model="keyless", reason=pb.FAILURE_REASON_NOT_CONFIGURED, message="set NO_SUCH_KEY"
)


def skip_config(
    sim: SimulatorHandle, upstreams: Sequence[Upstream], limits: dict[str, dict[str, int]] | None = None
) -> config.GatewayConfig:
    """`upstreams` in order as the `default` route, with provider `limits:` by provider name."""
    providers = [u.entry(sim.base_url) for u in upstreams]
    for entry in providers:
        if entry["name"] in (limits or {}):
            entry["limits"] = (limits or {})[entry["name"]]
    data = {
        "providers": providers,
        "routes": {"default": [f"{u.name}/{u.model}" for u in upstreams]},
        "failover": {"min_attempt_budget_s": 0.01},
    }
    sim.simulator.clear()
    return config.parse(data, source="test", env={"SIM_KEY": "sk-sim-key-1234"})


async def starts(h: Harness, text: str = "hi", **options: Any) -> list[pb.Started]:
    """The `started` events of a StreamChat that must end with `done`."""
    events = await stream(h, pb.StreamChatRequest(model="default", messages=user(text), **options))
    assert kinds(events)[-1] == "done", kinds(events)
    return [e.started for e in events if e.HasField("started")]


async def chat(h: Harness, text: str = "hi") -> pb.ChatResponse:
    response: pb.ChatResponse = await h.chat.Chat(pb.ChatRequest(model="default", messages=user(text)), timeout=5)
    return response


def retry_after_s(skipped: pb.Skipped) -> float:
    assert skipped.HasField("retry_after"), skipped
    return float(skipped.retry_after.ToNanoseconds()) / 1e9


def models_called(sim: SimulatorHandle) -> list[str]:
    return [o.model for o in sim.simulator.observations]


async def test_nothing_skipped_leaves_the_lists_empty_and_the_wire_unchanged(sim: SimulatorHandle) -> None:
    async with serving(sim, skip_config(sim, [PRIMARY, FALLBACK])) as h:
        [started] = await starts(h)
        assert len(started.skipped) == 0
        # An old client sees exactly the Started it always did, but for the additive policy and score.
        plain = pb.Started(provider="p", model="primary", attempt=1, policy=pb.ROUTING_POLICY_PRIORITY, score=1.0)
        assert started.SerializeToString() == plain.SerializeToString()
        response = await chat(h)
        assert response.provider == "p" and len(response.skipped) == 0
        assert "skipped" not in json_format.MessageToDict(response)


async def test_an_unconfigured_provider_is_listed_as_not_configured(sim: SimulatorHandle) -> None:
    async with serving(sim, skip_config(sim, [KEYLESS, PRIMARY])) as h:
        [started] = await starts(h)
        assert (started.provider, started.attempt) == ("p", 1)
        assert list(started.skipped) == [NOT_CONFIGURED]
        assert not started.skipped[0].HasField("retry_after")  # it frees when someone sets the key, not by itself
        response = await chat(h)
        assert list(response.skipped) == [NOT_CONFIGURED]
        assert [(a.provider, a.attempt) for a in response.attempts] == [("p", 1)]
        assert models_called(sim) == ["primary", "primary"]


async def test_a_provider_cooling_down_after_a_429_is_listed_as_unhealthy_with_its_retry_after(
    sim: SimulatorHandle,
) -> None:
    async with serving(sim, skip_config(sim, [KEYLESS, PRIMARY, FALLBACK])) as h:
        # A failed attempt is a failover, not a skip; each start lists only what was skipped just before it.
        first, second = await starts(h, "hi [[fault:429 retry_after=5 model=primary]]")
        assert (first.provider, list(first.skipped)) == ("p", [NOT_CONFIGURED])
        assert (second.provider, second.attempt, len(second.skipped)) == ("f", 2, 0)

        # The next call answers from its third target and says why the first two were not tried.
        [started] = await starts(h)
        assert (started.provider, started.attempt) == ("f", 1)
        keyless, cooling = started.skipped
        assert keyless == NOT_CONFIGURED
        assert (cooling.provider, cooling.model, cooling.reason) == ("p", "primary", pb.FAILURE_REASON_UNHEALTHY)
        assert re.fullmatch(r"cooling down for \d\.\d{3}s after rate_limited", cooling.message), cooling.message
        assert 4.0 < retry_after_s(cooling) <= 5.0

        response = await chat(h)
        assert [s.provider for s in response.skipped] == ["k", "p"] and response.provider == "f"
        assert response.skipped[1].reason == pb.FAILURE_REASON_UNHEALTHY
        assert retry_after_s(response.skipped[1]) <= retry_after_s(cooling)  # counts down, not a fixed 5 s
        assert [a.provider for a in response.attempts] == ["f"]
        assert models_called(sim) == ["primary", "fallback", "fallback", "fallback"]


async def test_a_provider_over_its_budget_is_listed_as_budget_exhausted(sim: SimulatorHandle) -> None:
    cfg = skip_config(sim, [PRIMARY, FALLBACK], limits={"p": {"requests_per_minute": 1}})
    async with serving(sim, cfg) as h:
        assert len((await chat(h)).skipped) == 0  # the one request of this minute

        events = await stream(h, pb.StreamChatRequest(model="default", messages=user("hi")))
        started = events[0].started
        assert (started.provider, started.attempt) == ("f", 1)
        [budget] = started.skipped
        assert (budget.provider, budget.model, budget.reason) == ("p", "primary", pb.FAILURE_REASON_BUDGET_EXHAUSTED)
        assert budget.message.startswith("provider:p requests_per_minute budget of 1 used up; frees in ")
        assert 55.0 < retry_after_s(budget) <= 60.0
        # What grpcurl prints: lowerCamelCase field names, enum value names, durations as seconds.
        as_json = json_format.MessageToDict(events[0])
        [entry] = as_json["started"]["skipped"]
        assert set(entry) == {"provider", "model", "reason", "message", "retryAfter"}
        assert entry["reason"] == "FAILURE_REASON_BUDGET_EXHAUSTED"
        assert re.fullmatch(r"\d+(\.\d+)?s", entry["retryAfter"]), entry["retryAfter"]

        response = await chat(h)
        assert [(s.provider, s.reason) for s in response.skipped] == [("p", pb.FAILURE_REASON_BUDGET_EXHAUSTED)]
        assert models_called(sim) == ["primary", "fallback", "fallback"]


async def test_a_window_too_small_after_context_too_long_is_listed_as_context_too_long(sim: SimulatorHandle) -> None:
    upstreams = [
        Upstream("p", "openai", "primary", 1000),
        Upstream("s", "openai", "small", 500),
        Upstream("f", "openai", "fallback", 2000, patient=True),
    ]
    async with serving(sim, skip_config(sim, upstreams)) as h:
        first, second = await starts(h, "hi [[fault:context model=primary]]")
        assert (first.provider, len(first.skipped), second.provider) == ("p", 0, "f")
        assert list(second.skipped) == [
            pb.Skipped(
                provider="s",
                model="small",
                reason=pb.FAILURE_REASON_CONTEXT_TOO_LONG,
                message="context window 500 too small",
            ),
        ]


async def test_a_model_without_prefill_is_listed_when_continue_needs_one(sim: SimulatorHandle) -> None:
    upstreams = [
        Upstream("p", "openai", "primary"),
        Upstream("o", "openai_compatible", "other"),
        Upstream("c", "anthropic", "claude", patient=True),
    ]
    async with serving(sim, skip_config(sim, upstreams)) as h:
        events = await stream(
            h,
            pb.StreamChatRequest(
                model="default",
                messages=user("hi [[fault:disconnect at=3 model=primary]]"),
                mid_stream_policy=pb.MID_STREAM_POLICY_CONTINUE,
            ),
        )
        assert text_of(events).endswith("You said: hi")
        started = [e.started for e in events if e.HasField("started")]
        assert [s.provider for s in started] == ["p", "c"]
        [other] = started[1].skipped
        assert (other.provider, other.reason) == ("o", pb.FAILURE_REASON_PREFILL_UNSUPPORTED)
        assert other.message == "cannot continue a partial assistant answer"


def test_every_skip_reason_has_its_own_failure_reason() -> None:
    mapped = {reason: to_proto.skipped(AttemptRecord(0, "a", "m", reason, "x")).reason for reason in SkipReason}
    assert pb.FAILURE_REASON_UNSPECIFIED not in mapped.values()
    assert mapped[SkipReason.DEADLINE] == pb.FAILURE_REASON_DEADLINE_TOO_SHORT
