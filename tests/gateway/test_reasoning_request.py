"""Asking for reasoning, end to end: gRPC -> gateway -> the official SDKs -> the simulator over HTTP.

Each provider type gets the reasoning parameters its real API documents (read off the recorded
upstream body), reasoning comes back as deltas and in Chat's answer with its token count, a caller
who asks not to see the text gets none but the count, and bad options are INVALID_ARGUMENT naming
the field before any upstream request is made.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anthropic
import grpc
import pytest

from gateway_service.domain.request import ChatRequest, ProviderEvent, ReasoningDelta, ReasoningOptions, TextDelta
from gateway_service.providers.reasoning import shown
from llm_simulator import start_simulator
from llmgateway.v1 import chat_service_pb2 as pb
from tests.gateway.e2e_helpers import Harness, Upstream, chat_failure, gateway, kinds, stream, stream_failure, user

PROMPT = "Why is the sky blue?"
THOUGHT = f"Thinking about: {PROMPT}"  # what the simulator reasons when asked to, without a [[think:]] marker
THOUGHT_TOKENS = len(THOUGHT.split())
ANSWER = f"Hello from the simulator. You said: {PROMPT}"
# o4-mini is named like an OpenAI reasoning model, so the simulator answers as OpenAI does: reasoning tokens
# in usage, never the text. deepseek-reasoner answers like DeepSeek/vLLM, with `reasoning_content`.
UPSTREAMS = [
    Upstream("oa", "openai", "o4-mini", patient=True),
    Upstream("ds", "openai_compatible", "deepseek-reasoner", patient=True),
    Upstream("an", "anthropic", "claude-sim", patient=True),
    Upstream("ge", "gemini", "gemini-2.5-flash", patient=True),
]
MODELS = {u.type: f"{u.name}/{u.model}" for u in UPSTREAMS}
TYPES = list(MODELS)
SHOWS_TEXT = {"openai": False, "openai_compatible": True, "anthropic": True, "gemini": True}


@pytest.fixture(scope="module")
async def h() -> AsyncIterator[Harness]:
    sim = await start_simulator()
    try:
        async with gateway(sim, UPSTREAMS) as harness:
            yield harness
    finally:
        await sim.close()


def ask(kind: str, reasoning: pb.ReasoningOptions | None = None, text: str = PROMPT, **kw: Any) -> pb.StreamChatRequest:
    return pb.StreamChatRequest(model=MODELS[kind], messages=user(text), reasoning=reasoning, **kw)


def last_body(h: Harness) -> dict[str, Any]:
    return h.sim.simulator.observations[-1].body


def reasoning_sent(kind: str, body: dict[str, Any]) -> Any:
    """The provider's reasoning parameters in an upstream request body."""
    if kind == "anthropic":
        return body.get("thinking")
    if kind == "gemini":
        # google-genai leaves ThinkingConfig's fields in snake_case, which the API's JSON mapping accepts.
        return body.get("generationConfig", {}).get("thinkingConfig")
    return body.get("reasoning_effort")


def reasoning_text(events: list[pb.StreamChatResponse]) -> str:
    return "".join(e.delta.reasoning_text for e in events if e.WhichOneof("event") == "delta")


def answer_text(events: list[pb.StreamChatResponse]) -> str:
    return "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta")


def usage_of(events: list[pb.StreamChatResponse]) -> pb.Usage:
    (usage,) = [e.usage for e in events if e.WhichOneof("event") == "usage"]
    return usage


def expected_sent(kind: str, effort: str, budget: int, *, shown: bool) -> Any:
    """What each provider type documents for that effort (OpenAI) or budget and text visibility."""
    if kind == "anthropic":
        return {"type": "enabled", "budget_tokens": budget, "display": "summarized" if shown else "omitted"}
    if kind == "gemini":
        return {"thinking_budget": budget, "include_thoughts": shown}
    return effort


@pytest.mark.parametrize("kind", TYPES)
async def test_stream_chat_asks_for_reasoning_and_streams_it(h: Harness, kind: str) -> None:
    events = await stream(h, ask(kind, pb.ReasoningOptions(effort=pb.REASONING_EFFORT_HIGH)))
    body = last_body(h)
    assert reasoning_sent(kind, body) == expected_sent(kind, "high", 16384, shown=True)
    if kind == "anthropic":
        assert body["max_tokens"] == 16384 + 4096  # the budget plus the default answer room
    assert reasoning_text(events) == (THOUGHT if SHOWS_TEXT[kind] else "")
    assert answer_text(events) == ANSWER
    assert usage_of(events).reasoning_tokens == THOUGHT_TOKENS
    if SHOWS_TEXT[kind]:
        deltas = [e.delta for e in events if e.WhichOneof("event") == "delta"]
        assert deltas[0].reasoning_text and deltas[-1].text  # reasoning comes before the answer
    assert kinds(events)[-1] == "done"


@pytest.mark.parametrize("kind", TYPES)
async def test_chat_answer_carries_reasoning_and_its_tokens(h: Harness, kind: str) -> None:
    request = pb.ChatRequest(
        model=MODELS[kind], messages=user(PROMPT), reasoning=pb.ReasoningOptions(effort=pb.REASONING_EFFORT_LOW)
    )
    answer = await h.chat.Chat(request, timeout=5)
    assert answer.message.content == ANSWER
    assert answer.usage.reasoning_tokens == THOUGHT_TOKENS
    text = "".join(r.text for r in answer.message.reasoning)
    assert text == (THOUGHT if SHOWS_TEXT[kind] else "")
    if kind == "anthropic":
        assert answer.message.reasoning[0].signature.startswith("sig_")


@pytest.mark.parametrize("kind", TYPES)
async def test_include_reasoning_false_hides_the_text_but_counts_the_tokens(h: Harness, kind: str) -> None:
    options = pb.ReasoningOptions(effort=pb.REASONING_EFFORT_MEDIUM, include_reasoning=False)
    events = await stream(h, ask(kind, options))
    assert reasoning_sent(kind, last_body(h)) == expected_sent(kind, "medium", 8192, shown=False)
    assert reasoning_text(events) == "" and answer_text(events) == ANSWER
    assert usage_of(events).reasoning_tokens == THOUGHT_TOKENS
    if kind == "openai_compatible":
        # No such switch in the compatible API: the server sent the reasoning and the gateway dropped it.
        assert h.sim.simulator.observations[-1].chunks_sent == THOUGHT_TOKENS + len(ANSWER.split())
    if kind == "anthropic":
        # The signature still comes, so a tool loop can send the (omitted) thinking block back.
        assert [e.delta.reasoning_signature for e in events if e.delta.reasoning_signature][0].startswith("sig_")
    answer = await h.chat.Chat(pb.ChatRequest(model=MODELS[kind], messages=user(PROMPT), reasoning=options), timeout=5)
    assert "".join(r.text for r in answer.message.reasoning) == ""
    assert answer.usage.reasoning_tokens == THOUGHT_TOKENS


BUDGET_CASES = [
    # (options, max_output_tokens, OpenAI effort, budget for Anthropic and Gemini)
    (pb.ReasoningOptions(effort=pb.REASONING_EFFORT_LOW), 3000, "low", 1500),  # half of max_output_tokens at most
    (pb.ReasoningOptions(effort=pb.REASONING_EFFORT_MINIMAL), 0, "minimal", 1024),
    (pb.ReasoningOptions(effort=pb.REASONING_EFFORT_MAX), 0, "max", 32768),
    (pb.ReasoningOptions(budget_tokens=5000), 8000, "medium", 5000),  # the effort level whose budget covers it
    (pb.ReasoningOptions(budget_tokens=1024), 0, "low", 1024),
    (pb.ReasoningOptions(budget_tokens=20000), 0, "high", 20000),
    (pb.ReasoningOptions(effort=pb.REASONING_EFFORT_HIGH, budget_tokens=2000), 0, "high", 2000),  # budget wins
]


@pytest.mark.parametrize(("options", "max_output", "effort", "budget"), BUDGET_CASES)
async def test_effort_and_budget_map_onto_each_provider(
    h: Harness, options: pb.ReasoningOptions, max_output: int, effort: str, budget: int
) -> None:
    for kind in TYPES:
        events = await stream(h, ask(kind, options, max_output_tokens=max_output))
        assert kinds(events)[-1] == "done"
        body = last_body(h)
        if kind == "anthropic":
            assert body["thinking"]["budget_tokens"] == budget
            assert body["max_tokens"] == (max_output or budget + 4096)
        elif kind == "gemini":
            assert reasoning_sent(kind, body)["thinking_budget"] == budget
            assert body["generationConfig"].get("maxOutputTokens") == (max_output or None)
        else:
            assert body["reasoning_effort"] == effort


@pytest.mark.parametrize("kind", TYPES)
async def test_effort_none_turns_reasoning_off(h: Harness, kind: str) -> None:
    # The [[think:]] marker makes the simulated model reason unless the request turned reasoning off.
    events = await stream(
        h, ask(kind, pb.ReasoningOptions(effort=pb.REASONING_EFFORT_NONE), text="[[think:should not happen]] hi")
    )
    sent = {"anthropic": {"type": "disabled"}, "gemini": {"thinking_budget": 0}}.get(kind, "none")
    assert reasoning_sent(kind, last_body(h)) == sent
    assert reasoning_text(events) == "" and usage_of(events).reasoning_tokens == 0


@pytest.mark.parametrize("kind", TYPES)
async def test_without_reasoning_options_nothing_is_sent(h: Harness, kind: str) -> None:
    events = await stream(h, ask(kind))
    body = last_body(h)
    assert reasoning_sent(kind, body) is None and "thinking" not in body and "reasoning_effort" not in body
    assert reasoning_text(events) == "" and usage_of(events).reasoning_tokens == 0


async def test_gemini_include_reasoning_alone_only_asks_for_thoughts(h: Harness) -> None:
    events = await stream(h, ask("gemini", pb.ReasoningOptions(include_reasoning=True), text="[[think:a b]] hi"))
    assert reasoning_sent("gemini", last_body(h)) == {"include_thoughts": True}
    assert reasoning_text(events) == "a b"


INVALID = [
    (pb.ReasoningOptions(budget_tokens=-1), 0, 0, "reasoning.budget_tokens"),
    (pb.ReasoningOptions(budget_tokens=512), 0, 0, "reasoning.budget_tokens"),
    (pb.ReasoningOptions(budget_tokens=4096), 4096, 0, "reasoning.budget_tokens"),
    (pb.ReasoningOptions(effort=pb.REASONING_EFFORT_NONE, budget_tokens=2048), 0, 0, "reasoning.budget_tokens"),
    (pb.ReasoningOptions(effort=99), 0, 0, "reasoning.effort"),  # type: ignore[arg-type]
    (pb.ReasoningOptions(effort=pb.REASONING_EFFORT_LOW), 1000, 0, "max_output_tokens"),
    (pb.ReasoningOptions(effort=pb.REASONING_EFFORT_LOW), 0, pb.MID_STREAM_POLICY_CONTINUE, "mid_stream_policy"),
]


@pytest.mark.parametrize(("options", "max_output", "policy", "field"), INVALID)
async def test_invalid_options_are_invalid_argument_naming_the_field(
    h: Harness, options: pb.ReasoningOptions, max_output: int, policy: int, field: str
) -> None:
    before = len(h.sim.simulator.observations)
    kw: dict[str, Any] = {"max_output_tokens": max_output, "mid_stream_policy": policy}
    failed = await stream_failure(h, ask("anthropic", options, **kw))
    chat = await chat_failure(h, pb.ChatRequest(model=MODELS["gemini"], messages=user(PROMPT), reasoning=options, **kw))
    for result in (failed, chat):
        assert result.code is grpc.StatusCode.INVALID_ARGUMENT and result.info.reason == "INVALID_ARGUMENT"
        assert result.bad_request is not None
        assert [v.field for v in result.bad_request.field_violations] == [field]
    assert len(h.sim.simulator.observations) == before


async def test_anthropic_thinking_leaves_out_the_sampling_it_fixes(h: Harness) -> None:
    sampling = pb.SamplingOptions(temperature=0.2, top_k=5, top_p=0.5)
    events = await stream(h, ask("anthropic", pb.ReasoningOptions(effort=pb.REASONING_EFFORT_LOW), sampling=sampling))
    body = last_body(h)
    assert "temperature" not in body and "top_k" not in body and body["top_p"] == 0.95
    assert reasoning_text(events) == THOUGHT
    # Without thinking the caller's sampling goes as it was.
    await stream(h, ask("anthropic", sampling=sampling))
    body = last_body(h)
    assert (body["temperature"], body["top_k"], body["top_p"]) == (0.2, 5, 0.5)


WEATHER = pb.Tool(name="get_weather", description="Weather for a city")


@pytest.mark.parametrize(
    "messages",
    [
        [pb.Message(role=pb.ROLE_USER, content="hi"), pb.Message(role=pb.ROLE_ASSISTANT, content="Hello")],
        user("hi"),
    ],
    ids=["prefill", "forced-tool"],
)
async def test_anthropic_refuses_what_it_cannot_do_while_thinking(h: Harness, messages: list[pb.Message]) -> None:
    before = len(h.sim.simulator.observations)
    choice = pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED) if len(messages) == 1 else None
    request = pb.StreamChatRequest(
        model=MODELS["anthropic"],
        messages=messages,
        tools=[WEATHER],
        tool_choice=choice,
        reasoning=pb.ReasoningOptions(effort=pb.REASONING_EFFORT_LOW),
    )
    failed = await stream_failure(h, request)
    assert failed.code is grpc.StatusCode.INVALID_ARGUMENT and failed.info.reason == "PROVIDER_REJECTED_REQUEST"
    assert ("prefill" if choice is None else "tool_choice") in failed.message
    assert failed.bad_request is not None
    field = "messages[1]" if choice is None else "tool_choice"
    assert [v.field for v in failed.bad_request.field_violations] == [field]
    assert len(h.sim.simulator.observations) == before  # refused before anything was sent


async def test_provider_limits_beyond_the_gateway_come_back_as_its_rejection(h: Harness) -> None:
    failed = await stream_failure(h, ask("gemini", pb.ReasoningOptions(budget_tokens=40000)))
    assert failed.code is grpc.StatusCode.INVALID_ARGUMENT and failed.info.reason == "PROVIDER_REJECTED_REQUEST"
    assert "thinking_budget" in failed.message


@pytest.mark.parametrize("include", [True, False])
@pytest.mark.parametrize("kind", ["anthropic", "gemini"])
async def test_tool_loop_with_thinking_sends_the_signed_reasoning_back(h: Harness, kind: str, include: bool) -> None:
    options = pb.ReasoningOptions(effort=pb.REASONING_EFFORT_LOW, include_reasoning=include)
    first = pb.ChatRequest(
        model=MODELS[kind],
        messages=user('Weather? [[call:get_weather {"city": "Paris"}]]'),
        tools=[WEATHER],
        reasoning=options,
    )
    turn = await h.chat.Chat(first, timeout=5)
    assert turn.finish_reason == pb.FINISH_REASON_TOOL_CALLS and turn.usage.reasoning_tokens > 0
    (reasoning,) = turn.message.reasoning
    assert reasoning.signature and bool(reasoning.text) is include
    call = turn.message.tool_calls[0]
    result = pb.Message(role=pb.ROLE_TOOL, tool_call_id=call.id, name=call.name, content='{"temp": 21}')
    second = pb.ChatRequest(
        model=MODELS[kind], messages=[*first.messages, turn.message, result], tools=[WEATHER], reasoning=options
    )
    final = await h.chat.Chat(second, timeout=5)  # the simulator refuses a tool loop without the thinking block
    assert final.message.content == 'The tool answered: {"temp": 21}'
    body = last_body(h)
    if kind == "anthropic":
        assert body["messages"][1]["content"][0] == {
            "type": "thinking",
            "thinking": reasoning.text,
            "signature": reasoning.signature,
        }
    else:
        assert body["contents"][1]["parts"][0]["thoughtSignature"] == reasoning.signature


async def test_cancelling_a_stream_with_hidden_reasoning_closes_the_upstream_request(h: Harness) -> None:
    options = pb.ReasoningOptions(effort=pb.REASONING_EFFORT_LOW, include_reasoning=False)
    call = h.chat.StreamChat(
        ask("openai_compatible", options, text=f"{PROMPT} [[fault:stall at={THOUGHT_TOKENS + 2}]]")
    )
    texts = []
    async for event in call:
        texts += [event.delta.text] if event.delta.text else []
        if len(texts) == 2:
            break
    call.cancel()
    observed = h.sim.simulator.observations[-1]
    await observed.done.wait()
    assert observed.outcome == "client_disconnected" and texts == ["Hello", " from"]


ANTHROPIC_REFUSALS = [
    ({"thinking": {"type": "enabled", "budget_tokens": 512}}, "greater than or equal to 1024"),
    ({"thinking": {"type": "enabled", "budget_tokens": 2048}, "max_tokens": 2048}, "`max_tokens` must be greater"),
    ({"thinking": {"type": "enabled", "budget_tokens": 1024}, "extra_body": {"temperature": 0.2}}, "`temperature`"),
    ({"thinking": {"type": "enabled", "budget_tokens": 1024}, "extra_body": {"top_k": 5}}, "`top_k`"),
    ({"thinking": {"type": "enabled", "budget_tokens": 1024}, "tool_choice": {"type": "any"}}, "forces tool use"),
    (
        {
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hel"}],
        },
        "Prefilling",
    ),
    # Adaptive thinking (models configured `reasoning: effort`): no budget, a known effort, the same limits.
    ({"thinking": {"type": "adaptive", "budget_tokens": 2048}}, "thinking.adaptive.budget_tokens: Extra inputs"),
    ({"thinking": {"type": "adaptive"}, "output_config": {"effort": "extreme"}}, "output_config.effort: Input"),
    ({"thinking": {"type": "adaptive", "display": "full"}}, "display: Input should be 'summarized' or 'omitted'"),
    ({"thinking": {"type": "adaptive"}, "extra_body": {"temperature": 0.2}}, "`temperature`"),
    ({"thinking": {"type": "adaptive"}, "tool_choice": {"type": "any"}}, "forces tool use"),
    (
        {
            "thinking": {"type": "adaptive"},
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hel"}],
        },
        "Prefilling",
    ),
]


@pytest.mark.parametrize(("params", "message"), ANTHROPIC_REFUSALS)
async def test_simulator_refuses_thinking_requests_anthropic_refuses(
    h: Harness, params: dict[str, Any], message: str
) -> None:
    """The simulator is what the end-to-end tests above lean on: it must answer these 400 as Anthropic does."""
    client = anthropic.AsyncAnthropic(api_key="sk-sim", base_url=h.sim.base_url, max_retries=0)
    request: dict[str, Any] = {
        "model": "claude-sim",
        "max_tokens": 4096,
        "messages": user_messages("hi"),
        "tools": [{"name": "t", "input_schema": {"type": "object"}}],
        **params,
    }
    try:
        with pytest.raises(anthropic.BadRequestError) as info:
            await client.messages.create(**request)
    finally:
        await client.close()
    assert message in str(info.value)


def user_messages(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def test_hiding_reasoning_keeps_signatures_and_closes_the_adapter_stream_at_once() -> None:
    closed: list[bool] = []

    async def adapter_events() -> AsyncGenerator[ProviderEvent, None]:
        try:
            yield ReasoningDelta(text="secret")
            yield ReasoningDelta(text="more", signature="sig_1")
            yield TextDelta("a")
            yield TextDelta("b")
        finally:
            closed.append(True)

    request = ChatRequest(model="m", messages=(), request_id="r", reasoning=ReasoningOptions(include_text=False))
    events = shown(request, adapter_events())
    assert [await anext(events), await anext(events)] == [ReasoningDelta(signature="sig_1"), TextDelta("a")]
    await events.aclose()
    assert closed == [True]  # closed by aclose itself, not later by the garbage collector
