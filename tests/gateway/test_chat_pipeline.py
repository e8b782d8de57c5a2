"""Pipeline behaviour end to end (gRPC -> gateway -> real SDK adapters -> simulator over HTTP):
all-failed statuses and their details, mid-stream policies, commit window, cancellation, deadlines."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from llm_simulator import SimulatorHandle
from llmgateway.v1 import chat_service_pb2 as pb
from tests.gateway.e2e_helpers import (
    Upstream,
    chat_failure,
    gateway,
    kinds,
    stream,
    stream_failure,
    text_of,
    user,
)

FULL = "Hello from the simulator. You said: hi"
TWO = [Upstream("p", "openai", "primary", 1000), Upstream("f", "openai", "fallback", 1000, patient=True)]


def ask(text: str, **kw: object) -> pb.StreamChatRequest:
    return pb.StreamChatRequest(model="default", messages=user(text), **kw)  # type: ignore[arg-type]


async def test_all_rate_limited_is_resource_exhausted_then_skipped_without_calling(sim: SimulatorHandle) -> None:
    async with gateway(sim, TWO) as h:
        sim.simulator.push_fault("429 retry_after=5 model=primary")
        sim.simulator.push_fault("429 retry_after_ms=2000 model=fallback")
        failed = await stream_failure(h, ask("hi"))
        assert failed.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert failed.info.reason == "ALL_PROVIDERS_RATE_LIMITED" and failed.info.domain == "llmgateway"
        assert failed.info.metadata["attempt_1"].startswith("p/primary rate_limited: ")
        assert failed.info.metadata["attempt_2"].startswith("f/fallback rate_limited: ")
        assert failed.retry is not None and 1.5 < failed.retry.retry_delay.ToTimedelta().total_seconds() <= 2.0
        assert kinds(failed.events) == ["started", "failover", "started"]
        # Both are cooling down now: the next call fails at once, naming the cooldowns, with no HTTP request.
        chat = await chat_failure(h, pb.ChatRequest(model="default", messages=user("hi")))
        assert (chat.code, chat.info.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "ALL_PROVIDERS_RATE_LIMITED")
        assert chat.info.metadata["attempts"] == "0" and "cooling down" in chat.info.metadata["skipped_1"]
        assert len(sim.simulator.observations) == 2


async def test_all_failed_for_different_reasons_is_unavailable_with_each_attempt(sim: SimulatorHandle) -> None:
    async with gateway(sim, TWO) as h:
        sim.simulator.push_fault("500 model=primary")
        sim.simulator.push_fault("disconnect at=0 model=fallback")
        failed = await stream_failure(h, ask("hi"))
        assert (failed.code, failed.info.reason) == (grpc.StatusCode.UNAVAILABLE, "ALL_PROVIDERS_FAILED")
        assert failed.info.metadata["attempt_1"].startswith("p/primary server_error: ")
        assert failed.info.metadata["attempt_2"].startswith("f/fallback connection_error: ")
        assert failed.retry is not None


async def test_context_too_long_without_a_larger_window_is_out_of_range(sim: SimulatorHandle) -> None:
    async with gateway(sim, TWO) as h:
        failed = await stream_failure(h, ask("hi [[fault:context model=primary]]"))
        assert (failed.code, failed.info.reason) == (grpc.StatusCode.OUT_OF_RANGE, "CONTEXT_TOO_LONG")
        assert failed.info.metadata["skipped_1"].startswith("f/fallback context_too_small")
        assert len(sim.simulator.observations) == 1


async def test_restart_tells_the_caller_to_discard_and_the_fallback_starts_over(sim: SimulatorHandle) -> None:
    async with gateway(sim, TWO) as h:
        policy = pb.MID_STREAM_POLICY_RESTART
        events = await stream(h, ask("hi [[fault:disconnect at=2 model=primary]]", mid_stream_policy=policy))
        assert kinds(events)[:6] == ["started", "delta", "delta", "failover", "started", "delta"]
        assert events[3].failover.discard_output and events[3].failover.reason == pb.FAILURE_REASON_CONNECTION_ERROR
        after = events[4:]
        assert text_of(after) == FULL and [e.delta.sequence for e in after if e.HasField("delta")][0] == 3
        assert events[-1].done.attempts == 2
        stalls = user("hi [[fault:stall at=2 model=primary]]")
        request = pb.ChatRequest(model="default", messages=stalls, mid_stream_policy=policy)
        response = await h.chat.Chat(request, timeout=5)
        assert response.message.content == FULL  # the discarded words are not in the aggregated answer


async def test_continue_resumes_on_anthropic_from_an_assistant_prefill(sim: SimulatorHandle) -> None:
    upstreams = [
        Upstream("p", "openai", "primary"),
        Upstream("o", "openai_compatible", "other"),
        Upstream("c", "anthropic", "claude", patient=True),
    ]
    async with gateway(sim, upstreams) as h:
        policy = pb.MID_STREAM_POLICY_CONTINUE
        events = await stream(h, ask("hi [[fault:disconnect at=3 model=primary]]", mid_stream_policy=policy))
        assert text_of(events) == FULL  # "Hello from the" from openai, " simulator. You said: hi" from anthropic
        failover = next(e.failover for e in events if e.HasField("failover"))
        assert (failover.to_provider, failover.discard_output) == ("c", False)  # `o` cannot take a prefill
        sent = sim.simulator.observations[1]
        assert sent.api == "anthropic"
        assert sent.body["messages"][-1] == {
            "role": "assistant",
            "content": [{"type": "text", "text": "Hello from the"}],
        }
        assert [e.delta.sequence for e in events if e.HasField("delta")] == list(range(1, 8))


async def test_continue_is_refused_after_tool_call_deltas(sim: SimulatorHandle) -> None:
    upstreams = [Upstream("p", "openai", "primary"), Upstream("c", "anthropic", "claude", patient=True)]
    async with gateway(sim, upstreams) as h:
        text = 'hi [[call:get_weather {"city": "Paris"}]] [[fault:disconnect at=1 model=primary]]'
        failed = await stream_failure(h, ask(text, mid_stream_policy=pb.MID_STREAM_POLICY_CONTINUE))
        assert (failed.code, failed.info.reason) == (grpc.StatusCode.UNAVAILABLE, "MID_STREAM_FAILURE")
        assert failed.info.metadata["policy"] == "CONTINUE"
        assert "CONTINUE refused after tool-call deltas" in failed.message
        assert failed.events[1].delta.tool_call.name == "get_weather"
        assert len(sim.simulator.observations) == 1


@pytest.mark.parametrize("window", [{"commit_window_tokens": 5}, {"commit_window_ms": 2000}])
async def test_failure_inside_the_commit_window_fails_over_invisibly(
    sim: SimulatorHandle, window: dict[str, int]
) -> None:
    async with gateway(sim, TWO) as h:
        events = await stream(h, ask("hi [[fault:disconnect at=3 model=primary]]", **window))
        assert kinds(events)[:3] == ["started", "failover", "started"]
        assert not events[1].failover.discard_output
        assert text_of(events) == FULL and events[3].delta.sequence == 1


async def test_cancelling_closes_the_upstream_at_once_and_counts_usage(sim: SimulatorHandle) -> None:
    async with gateway(sim, TWO) as h:
        call = h.chat.StreamChat(ask("hi [[fault:stall at=3 model=primary]]"), timeout=5)
        seen = [await call.read() for _ in range(4)]
        assert kinds(seen) == ["started", "delta", "delta", "delta"]
        call.cancel()
        observed = (await sim.simulator.wait_for_requests(1))[0]
        await asyncio.wait_for(observed.done.wait(), 1.0)
        assert observed.client_disconnected and observed.outcome == "client_disconnected"
        assert h.running.gateway.ledger.totals("p").output_tokens > 0  # estimated from what was received


async def test_deadline_is_split_so_the_fallback_answers_inside_it(sim: SimulatorHandle) -> None:
    patient = [Upstream("p", "openai", "primary", patient=True), Upstream("f", "openai", "fallback", patient=True)]
    async with gateway(sim, patient) as h:
        # Each would wait 3 s for a first token; a 1 s deadline gives the stalled primary half of it.
        started = time.monotonic()
        events = await stream(h, ask("hi [[fault:stall at=0 model=primary]]"), timeout=1.0)
        assert 0.45 < time.monotonic() - started < 1.0
        assert events[1].failover.reason == pb.FAILURE_REASON_TIMEOUT and text_of(events) == FULL


async def test_provider_order_reorders_the_route(sim: SimulatorHandle) -> None:
    async with gateway(sim, TWO) as h:
        events = await stream(h, ask("hi", provider_order=["f"]))
        assert events[0].started.provider == "f" and kinds(events).count("failover") == 0
        direct = await stream(h, pb.StreamChatRequest(model="p/primary", messages=user("hi")))
        assert direct[-1].done.provider == "p"


async def test_anthropic_tool_loop_carries_reasoning_signatures_back(sim: SimulatorHandle) -> None:
    async with gateway(sim, [Upstream("c", "anthropic", "claude", patient=True)]) as h:
        first = pb.ChatRequest(
            model="default", messages=user('Weather? [[think:Use the tool]] [[call:get_weather {"city": "Paris"}]]')
        )
        answer = await h.chat.Chat(first, timeout=5)
        assert answer.finish_reason == pb.FINISH_REASON_TOOL_CALLS
        (reasoning,) = answer.message.reasoning
        assert reasoning.text == "Use the tool" and reasoning.signature.startswith("sig_")
        call = answer.message.tool_calls[0]
        result = pb.Message(role=pb.ROLE_TOOL, tool_call_id=call.id, name=call.name, content='{"temp": 21}')
        second = pb.ChatRequest(model="default", messages=[*first.messages, answer.message, result])
        final = await h.chat.Chat(second, timeout=5)
        assert final.message.content == 'The tool answered: {"temp": 21}'
        sent = sim.simulator.observations[1].body["messages"][1]["content"]
        assert {"type": "thinking", "thinking": "Use the tool", "signature": reasoning.signature} in sent
