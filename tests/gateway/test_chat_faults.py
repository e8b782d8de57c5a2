"""The fault catalogue end to end: each fault at each point of the stream x {StreamChat, Chat} x provider type.

gRPC client -> gateway on a real grpc.aio server -> real adapter and official SDK -> simulator over HTTP.
The faulty provider is the route's first candidate; an OpenAI fallback answers when failover applies.
Every successful stream must end with exactly one `done`; every other ends with a non-OK status.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import pytest

from gateway_service.providers import create_adapter
from gateway_service.providers.base import ProviderConfig
from llm_simulator import SimulatorHandle
from llmgateway.v1 import chat_service_pb2 as pb
from tests.gateway.e2e_helpers import (
    PATIENT_TIMEOUTS,
    Upstream,
    chat_failure,
    gateway,
    kinds,
    stream_failure,
    text_of,
    user,
)

FALLBACK_TEXT = "Hello from the simulator. You said: hi"
R = pb.FailureReason


@dataclass(frozen=True)
class Expect:
    """What a fault must lead to: a failover with `reason`, a mid-stream failure after `delivered`
    deltas, the provider's refusal (no failover), or a content-filter finish."""

    outcome: str  # failover | mid_stream | rejected | filtered
    reason: int = 0
    delivered: int = 0


# fault spec -> expectation, for every provider type (overrides below where providers differ).
CATALOGUE: dict[str, Expect] = {
    "429 retry_after=2": Expect("failover", R.FAILURE_REASON_RATE_LIMITED),
    "429 retry_after_ms=1500": Expect("failover", R.FAILURE_REASON_RATE_LIMITED),
    "quota": Expect("failover", R.FAILURE_REASON_QUOTA_EXHAUSTED),
    "401": Expect("failover", R.FAILURE_REASON_AUTH_FAILED),
    "403": Expect("failover", R.FAILURE_REASON_AUTH_FAILED),
    "400": Expect("rejected"),
    "context": Expect("failover", R.FAILURE_REASON_CONTEXT_TOO_LONG),
    "529": Expect("failover", R.FAILURE_REASON_OVERLOADED),
    "500": Expect("failover", R.FAILURE_REASON_SERVER_ERROR),
    "502": Expect("failover", R.FAILURE_REASON_SERVER_ERROR),
    "slow ms=1500": Expect("failover", R.FAILURE_REASON_TIMEOUT),
    "stall at=0": Expect("failover", R.FAILURE_REASON_TIMEOUT),
    "stall at=2": Expect("mid_stream", R.FAILURE_REASON_TIMEOUT, 2),
    "disconnect at=0": Expect("failover", R.FAILURE_REASON_CONNECTION_ERROR),
    "disconnect at=2": Expect("mid_stream", R.FAILURE_REASON_CONNECTION_ERROR, 2),
    "truncate at=0": Expect("failover", R.FAILURE_REASON_TRUNCATED),
    "truncate at=3": Expect("mid_stream", R.FAILURE_REASON_TRUNCATED, 3),
    # After every word but before the finish reason: still a failure, never a complete-looking answer.
    "truncate at=7": Expect("mid_stream", R.FAILURE_REASON_TRUNCATED, 7),
    "disconnect at=7": Expect("mid_stream", R.FAILURE_REASON_CONNECTION_ERROR, 7),
    "malformed at=0": Expect("failover", R.FAILURE_REASON_MALFORMED_RESPONSE),
    "malformed at=2": Expect("mid_stream", R.FAILURE_REASON_MALFORMED_RESPONSE, 2),
    "error at=0": Expect("failover", R.FAILURE_REASON_SERVER_ERROR),
    "error at=2": Expect("mid_stream", R.FAILURE_REASON_SERVER_ERROR, 2),
    "filter": Expect("filtered"),
}
OVERRIDES: dict[str, dict[str, Expect]] = {
    # Anthropic's in-stream `event: error` defaults to overloaded_error.
    "anthropic": {
        "error at=0": Expect("failover", R.FAILURE_REASON_OVERLOADED),
        "error at=2": Expect("mid_stream", R.FAILURE_REASON_OVERLOADED, 2),
    },
    # Gemini's in-stream error chunk is 503 UNAVAILABLE "The model is overloaded".
    "gemini": {
        "error at=0": Expect("failover", R.FAILURE_REASON_OVERLOADED),
        "error at=2": Expect("mid_stream", R.FAILURE_REASON_OVERLOADED, 2),
    },
}
TYPES = ("openai", "openai_compatible", "anthropic", "gemini")


def expectation(provider_type: str, fault: str) -> Expect:
    return OVERRIDES.get(provider_type, {}).get(fault, CATALOGUE[fault])


def require_adapter(provider_type: str) -> None:
    try:
        create_adapter(ProviderConfig(name="probe", type=provider_type, base_url="http://127.0.0.1:9", api_key="k"))
    except NotImplementedError as exc:
        pytest.skip(f"the {provider_type} adapter has not landed: {exc}")


# The primary's budgets are the fast ones only where a timeout is the fault under test; for every other fault a
# busy machine (make test runs two workers) could turn a merely late first token into a failover the fault did
# not cause. A stall after two words must get them out before its idle budget ends it.
TIMEOUT_FAULTS: dict[str, dict[str, float]] = {
    "slow ms=1500": {},
    "stall at=0": {},
    "stall at=2": {"first_token_timeout_s": PATIENT_TIMEOUTS["first_token_timeout_s"]},
}


def upstreams(provider_type: str, fault: str) -> list[Upstream]:
    # The fallback's larger window lets a context-too-long failure move on to it.
    timeouts = TIMEOUT_FAULTS.get(fault, {})
    primary = Upstream("p", provider_type, "primary", 1000, patient=fault not in TIMEOUT_FAULTS, timeouts=timeouts)
    return [primary, Upstream("f", "openai", "fallback", 2000, patient=True)]


def prompt(fault: str) -> list[pb.Message]:
    return user(f"hi [[fault:{fault} model=primary]]")


@pytest.mark.parametrize("fault", list(CATALOGUE))
@pytest.mark.parametrize("provider_type", TYPES)
async def test_stream_chat(sim: SimulatorHandle, provider_type: str, fault: str) -> None:
    require_adapter(provider_type)
    expect = expectation(provider_type, fault)
    async with gateway(sim, upstreams(provider_type, fault)) as h:
        request = pb.StreamChatRequest(model="default", messages=prompt(fault), request_id="r-1")
        if expect.outcome in ("failover", "filtered"):
            events = [e async for e in h.chat.StreamChat(request, timeout=5)]
            assert kinds(events).count("done") == 1 and kinds(events)[-1] == "done"
            if expect.outcome == "failover":
                assert_failed_over(events, expect.reason)
            else:
                assert_filtered(events)
            return
        failed = await stream_failure(h, request)
        if expect.outcome == "rejected":
            assert failed.code is grpc.StatusCode.INVALID_ARGUMENT
            assert failed.info.reason == "PROVIDER_REJECTED_REQUEST" and failed.info.domain == "llmgateway"
            assert kinds(failed.events) == ["started"]
            assert len(sim.simulator.observations) == 1  # no failover on a request the provider refused
            return
        assert failed.code is grpc.StatusCode.UNAVAILABLE
        assert failed.info.reason == "MID_STREAM_FAILURE"
        assert failed.info.metadata["delivered_deltas"] == str(expect.delivered)
        assert failed.info.metadata["attempt_1"].startswith(
            f"p/primary {pb.FailureReason.Name(expect.reason)[15:].lower()}"
        )
        assert kinds(failed.events) == ["started"] + ["delta"] * expect.delivered
        assert [e.delta.sequence for e in failed.events[1:]] == list(range(1, expect.delivered + 1))


def assert_failed_over(events: list[pb.StreamChatResponse], reason: int) -> None:
    assert kinds(events)[:3] == ["started", "failover", "started"]
    priority = pb.ROUTING_POLICY_PRIORITY
    assert events[0].started == pb.Started(provider="p", model="primary", attempt=1, policy=priority, score=1.0)
    failover = events[1].failover
    assert (failover.from_provider, failover.from_model, failover.to_provider, failover.to_model) == (
        "p",
        "primary",
        "f",
        "fallback",
    )
    assert failover.reason == reason, pb.FailureReason.Name(failover.reason)
    assert failover.attempt == 1 and not failover.discard_output and failover.message
    assert "sk-sim-key-1234" not in failover.message
    assert events[2].started == pb.Started(provider="f", model="fallback", attempt=2, policy=priority, score=2.0)
    deltas = [e.delta for e in events if e.WhichOneof("event") == "delta"]
    assert [d.sequence for d in deltas] == list(range(1, len(deltas) + 1))
    assert text_of(events) == FALLBACK_TEXT
    usage = next(e.usage for e in events if e.WhichOneof("event") == "usage")
    assert (usage.provider, usage.attempt) == ("f", 2) and usage.output_tokens > 0 and usage.cost_usd > 0
    done = events[-1].done
    assert (done.finish_reason, done.provider, done.model, done.attempts, done.request_id) == (
        pb.FINISH_REASON_STOP,
        "f",
        "fallback",
        2,
        "r-1",
    )
    assert done.upstream_request_id.startswith("req_sim")


def assert_filtered(events: list[pb.StreamChatResponse]) -> None:
    assert kinds(events)[0] == "started" and "failover" not in kinds(events)
    assert events[-1].done.finish_reason == pb.FINISH_REASON_CONTENT_FILTER
    assert events[-1].done.provider == "p" and events[-1].done.attempts == 1


@pytest.mark.parametrize("fault", list(CATALOGUE))
@pytest.mark.parametrize("provider_type", TYPES)
async def test_chat(sim: SimulatorHandle, provider_type: str, fault: str) -> None:
    require_adapter(provider_type)
    expect = expectation(provider_type, fault)
    async with gateway(sim, upstreams(provider_type, fault)) as h:
        request = pb.ChatRequest(model="default", messages=prompt(fault))
        if expect.outcome == "failover":
            response = await h.chat.Chat(request, timeout=5)
            assert response.message.content == FALLBACK_TEXT and response.message.role == pb.ROLE_ASSISTANT
            assert (response.provider, response.model, response.finish_reason) == (
                "f",
                "fallback",
                pb.FINISH_REASON_STOP,
            )
            assert [(a.attempt, a.provider, a.failure_reason) for a in response.attempts] == [
                (1, "p", expect.reason),
                (2, "f", pb.FAILURE_REASON_UNSPECIFIED),
            ]
            assert response.attempts[0].message and response.attempts[1].usage.output_tokens > 0
            assert response.usage.output_tokens >= response.attempts[1].usage.output_tokens
            return
        if expect.outcome == "filtered":
            response = await h.chat.Chat(request, timeout=5)
            assert response.finish_reason == pb.FINISH_REASON_CONTENT_FILTER and response.provider == "p"
            assert len(response.attempts) == 1
            return
        failed = await chat_failure(h, request)
        if expect.outcome == "rejected":
            assert (failed.code, failed.info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PROVIDER_REJECTED_REQUEST")
            return
        assert (failed.code, failed.info.reason) == (grpc.StatusCode.UNAVAILABLE, "MID_STREAM_FAILURE")
        assert failed.info.metadata["delivered_deltas"] == str(expect.delivered)
