"""Models configured `reasoning: effort`, end to end: gRPC -> gateway -> the official SDKs -> the simulator.

Anthropic and Gemini models that take a thinking level instead of a token budget get the level form
(Anthropic adaptive thinking + `output_config.effort`, Gemini `thinking_level`) and never a budget, while
the provider's other models keep the budget form; reasoning streams back as it does for budget models.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx2
import pytest
import yaml
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from gateway_service import app, config
from llm_simulator import start_simulator
from llmgateway.v1 import chat_service_pb2 as pb
from tests.gateway.e2e_helpers import Harness, Upstream, kinds, serving, stream, stream_failure, user
from tests.gateway.test_reasoning_request import (
    ANSWER,
    PROMPT,
    THOUGHT,
    THOUGHT_TOKENS,
    answer_text,
    reasoning_text,
    usage_of,
)

UPSTREAMS = [
    Upstream("an", "anthropic", "claude-sim", patient=True),
    Upstream("ge", "gemini", "gemini-2.5-flash", patient=True),
]
EFFORT_MODELS = {"anthropic": "claude-adaptive", "gemini": "gemini-3-sim"}
MODELS = {"anthropic": "an/claude-adaptive", "gemini": "ge/gemini-3-sim"}
BUDGET_MODELS = {"anthropic": "an/claude-sim", "gemini": "ge/gemini-2.5-flash"}
TYPES = list(MODELS)


def gateway_config(sim_url: str) -> config.GatewayConfig:
    """Each provider with its budget model (the harness default) and an effort model beside it."""
    providers = [u.entry(sim_url) for u in UPSTREAMS]
    for entry in providers:
        entry["models"].append({"name": EFFORT_MODELS[entry["type"]], "reasoning": "effort"})
    data = {
        "providers": providers,
        "routes": {"default": list(MODELS.values())},
        "failover": {"min_attempt_budget_s": 0.01},
    }
    return config.parse(yaml.safe_load(yaml.safe_dump(data)), source="test", env={"SIM_KEY": "sk-sim-key-1234"})


@pytest.fixture(scope="module")
async def h() -> AsyncIterator[Harness]:
    sim = await start_simulator()
    try:
        async with serving(sim, gateway_config(sim.base_url)) as harness:
            yield harness
    finally:
        await sim.close()


def ask(model: str, reasoning: pb.ReasoningOptions | None, text: str = PROMPT, **kw: Any) -> pb.StreamChatRequest:
    return pb.StreamChatRequest(model=model, messages=user(text), reasoning=reasoning, **kw)


def last_body(h: Harness) -> dict[str, Any]:
    return h.sim.simulator.observations[-1].body


def thinking_config(body: dict[str, Any]) -> Any:
    # google-genai leaves ThinkingConfig's fields in snake_case, which the API's JSON mapping accepts.
    return body.get("generationConfig", {}).get("thinkingConfig")


def level_form(kind: str, body: dict[str, Any]) -> Any:
    """The reasoning an effort model was asked for: Anthropic's (thinking, output_config), Gemini's thinkingConfig."""
    if kind == "anthropic":
        return body.get("thinking"), body.get("output_config")
    return thinking_config(body)


def test_effort_models_reach_their_provider_adapter() -> None:
    cfg = gateway_config("http://127.0.0.1:9")
    anthropic_spec, gemini_spec = cfg.providers
    assert [m.reasoning for m in anthropic_spec.models] == ["budget", "effort"]
    assert app.provider_config(anthropic_spec).effort_models == frozenset({"claude-adaptive"})
    assert app.provider_config(gemini_spec).effort_models == frozenset({"gemini-3-sim"})


@pytest.mark.parametrize("kind", TYPES)
async def test_an_effort_model_is_asked_for_a_level_and_streams_reasoning(h: Harness, kind: str) -> None:
    events = await stream(h, ask(MODELS[kind], pb.ReasoningOptions(effort=pb.REASONING_EFFORT_HIGH)))
    body = last_body(h)
    if kind == "anthropic":
        assert level_form(kind, body) == ({"type": "adaptive", "display": "summarized"}, {"effort": "high"})
        assert body["max_tokens"] == 16384 + 4096  # the room HIGH's budget would get on a budget model
    else:
        assert level_form(kind, body) == {"thinking_level": "HIGH", "include_thoughts": True}
    assert reasoning_text(events) == THOUGHT and answer_text(events) == ANSWER
    assert usage_of(events).reasoning_tokens == THOUGHT_TOKENS
    deltas = [e.delta for e in events if e.WhichOneof("event") == "delta"]
    assert deltas[0].reasoning_text and deltas[-1].text  # reasoning comes before the answer
    assert kinds(events)[-1] == "done"


@pytest.mark.parametrize("kind", TYPES)
async def test_the_same_providers_budget_model_keeps_the_budget_form(h: Harness, kind: str) -> None:
    events = await stream(h, ask(BUDGET_MODELS[kind], pb.ReasoningOptions(effort=pb.REASONING_EFFORT_HIGH)))
    body = last_body(h)
    if kind == "anthropic":
        assert body["thinking"] == {"type": "enabled", "budget_tokens": 16384, "display": "summarized"}
        assert "output_config" not in body
    else:
        assert thinking_config(body) == {"thinking_budget": 16384, "include_thoughts": True}
    assert reasoning_text(events) == THOUGHT


@pytest.mark.parametrize("kind", TYPES)
async def test_include_reasoning_false_on_an_effort_model(h: Harness, kind: str) -> None:
    options = pb.ReasoningOptions(effort=pb.REASONING_EFFORT_MEDIUM, include_reasoning=False)
    events = await stream(h, ask(MODELS[kind], options))
    expected = (
        ({"type": "adaptive", "display": "omitted"}, {"effort": "medium"})
        if kind == "anthropic"
        else {"thinking_level": "MEDIUM", "include_thoughts": False}
    )
    assert level_form(kind, last_body(h)) == expected
    assert reasoning_text(events) == "" and answer_text(events) == ANSWER
    assert usage_of(events).reasoning_tokens == THOUGHT_TOKENS
    if kind == "anthropic":
        # The signature still comes, so a tool loop can send the (omitted) thinking block back.
        assert [e.delta.reasoning_signature for e in events if e.delta.reasoning_signature][0].startswith("sig_")
    answer = await h.chat.Chat(pb.ChatRequest(model=MODELS[kind], messages=user(PROMPT), reasoning=options), timeout=5)
    assert answer.message.content == ANSWER and answer.usage.reasoning_tokens == THOUGHT_TOKENS
    assert "".join(r.text for r in answer.message.reasoning) == ""


LEVEL_CASES = [
    # (options, max_output_tokens, Anthropic output_config.effort, Gemini thinking_level, Anthropic max_tokens)
    (pb.ReasoningOptions(effort=pb.REASONING_EFFORT_MINIMAL), 0, "low", "MINIMAL", 1024 + 4096),
    (pb.ReasoningOptions(effort=pb.REASONING_EFFORT_LOW), 3000, "low", "LOW", 3000),
    (pb.ReasoningOptions(effort=pb.REASONING_EFFORT_XHIGH), 0, "xhigh", "XHIGH", 24576 + 4096),
    (pb.ReasoningOptions(effort=pb.REASONING_EFFORT_MAX), 0, "max", "XHIGH", 32768 + 4096),
    # Only a budget: the level whose derived budget covers it, as for OpenAI's reasoning_effort.
    (pb.ReasoningOptions(budget_tokens=1024), 0, "low", "LOW", 2048 + 4096),
    (pb.ReasoningOptions(budget_tokens=5000), 8000, "medium", "MEDIUM", 8000),
    (pb.ReasoningOptions(budget_tokens=20000), 0, "high", "HIGH", 16384 + 4096),
    # Both: the caller's level wins (on a budget model the budget does).
    (pb.ReasoningOptions(effort=pb.REASONING_EFFORT_HIGH, budget_tokens=2000), 0, "high", "HIGH", 16384 + 4096),
]


@pytest.mark.parametrize(("options", "max_output", "effort", "level", "max_tokens"), LEVEL_CASES)
async def test_effort_and_budget_map_onto_levels(
    h: Harness, options: pb.ReasoningOptions, max_output: int, effort: str, level: str, max_tokens: int
) -> None:
    events = await stream(h, ask(MODELS["anthropic"], options, max_output_tokens=max_output))
    body = last_body(h)
    assert kinds(events)[-1] == "done" and body["output_config"] == {"effort": effort}
    assert "budget_tokens" not in body["thinking"] and body["max_tokens"] == max_tokens
    events = await stream(h, ask(MODELS["gemini"], options, max_output_tokens=max_output))
    sent = thinking_config(last_body(h))
    assert kinds(events)[-1] == "done" and sent["thinking_level"] == level and "thinking_budget" not in sent
    assert last_body(h)["generationConfig"].get("maxOutputTokens") == (max_output or None)


async def test_effort_none_turns_anthropic_thinking_off(h: Harness) -> None:
    options = pb.ReasoningOptions(effort=pb.REASONING_EFFORT_NONE)
    events = await stream(h, ask(MODELS["anthropic"], options, text="[[think:should not happen]] hi"))
    body = last_body(h)
    assert body["thinking"] == {"type": "disabled"} and "output_config" not in body and body["max_tokens"] == 4096
    assert reasoning_text(events) == "" and usage_of(events).reasoning_tokens == 0


async def test_effort_none_asks_gemini_for_the_least_thinking_and_hides_any(h: Harness) -> None:
    options = pb.ReasoningOptions(effort=pb.REASONING_EFFORT_NONE)
    events = await stream(h, ask(MODELS["gemini"], options))
    assert thinking_config(last_body(h)) == {"thinking_level": "MINIMAL"}
    assert reasoning_text(events) == "" and usage_of(events).reasoning_tokens == 0
    # MINIMAL may still think on a hard prompt (the marker): counted, but no thought text without include_thoughts.
    events = await stream(h, ask(MODELS["gemini"], options, text="[[think:a hard one]] hi"))
    assert reasoning_text(events) == "" and usage_of(events).reasoning_tokens == 3


async def test_include_reasoning_alone_asks_an_effort_model_for_no_level(h: Harness) -> None:
    options = pb.ReasoningOptions(include_reasoning=True)
    await stream(h, ask(MODELS["anthropic"], options))
    body = last_body(h)
    assert "thinking" not in body and "output_config" not in body and body["max_tokens"] == 4096
    events = await stream(h, ask(MODELS["gemini"], options, text="[[think:a b]] hi"))
    assert thinking_config(last_body(h)) == {"include_thoughts": True} and reasoning_text(events) == "a b"


async def test_adaptive_thinking_merges_with_a_json_schema_output_config(h: Harness) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    request = ask(
        MODELS["anthropic"],
        pb.ReasoningOptions(effort=pb.REASONING_EFFORT_LOW),
        response_format=pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, json_schema=schema),
    )
    await stream(h, request)
    output_config = last_body(h)["output_config"]
    assert output_config["effort"] == "low" and output_config["format"]["type"] == "json_schema"
    assert output_config["format"]["schema"]["properties"] == {"answer": {"type": "string"}}


async def test_adaptive_thinking_keeps_anthropics_thinking_limits(h: Harness) -> None:
    sampling = pb.SamplingOptions(temperature=0.2, top_k=5, top_p=0.5)
    await stream(h, ask(MODELS["anthropic"], pb.ReasoningOptions(effort=pb.REASONING_EFFORT_LOW), sampling=sampling))
    body = last_body(h)
    assert "temperature" not in body and "top_k" not in body and body["top_p"] == 0.95
    before = len(h.sim.simulator.observations)
    forced = pb.StreamChatRequest(
        model=MODELS["anthropic"],
        messages=user("hi"),
        tools=[WEATHER],
        tool_choice=pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED),
        reasoning=pb.ReasoningOptions(effort=pb.REASONING_EFFORT_LOW),
    )
    failed = await stream_failure(h, forced)
    assert failed.code is grpc.StatusCode.INVALID_ARGUMENT and failed.info.reason == "PROVIDER_REJECTED_REQUEST"
    assert failed.bad_request is not None
    assert [v.field for v in failed.bad_request.field_violations] == ["tool_choice"]
    assert len(h.sim.simulator.observations) == before  # refused before anything was sent


WEATHER = pb.Tool(name="get_weather", description="Weather for a city")


@pytest.mark.parametrize("kind", TYPES)
async def test_tool_loop_on_an_effort_model_sends_the_signed_reasoning_back(h: Harness, kind: str) -> None:
    options = pb.ReasoningOptions(effort=pb.REASONING_EFFORT_LOW)
    first = pb.ChatRequest(
        model=MODELS[kind],
        messages=user('Weather? [[call:get_weather {"city": "Oslo"}]]'),
        tools=[WEATHER],
        reasoning=options,
    )
    turn = await h.chat.Chat(first, timeout=5)
    (reasoning,) = turn.message.reasoning
    assert turn.finish_reason == pb.FINISH_REASON_TOOL_CALLS and reasoning.signature and reasoning.text
    call = turn.message.tool_calls[0]
    result = pb.Message(role=pb.ROLE_TOOL, tool_call_id=call.id, name=call.name, content='{"temp": 3}')
    second = pb.ChatRequest(
        model=MODELS[kind], messages=[*first.messages, turn.message, result], tools=[WEATHER], reasoning=options
    )
    final = await h.chat.Chat(second, timeout=5)  # the simulator refuses a tool loop without the thinking block
    assert final.message.content == 'The tool answered: {"temp": 3}'
    body = last_body(h)
    if kind == "anthropic":
        assert body["thinking"]["type"] == "adaptive"
        assert body["messages"][1]["content"][0]["signature"] == reasoning.signature
    else:
        assert "thinking_level" in thinking_config(body)
        assert body["contents"][1]["parts"][0]["thoughtSignature"] == reasoning.signature


GEMINI_REFUSALS = [
    ({"thinking_level": "HIGH", "thinking_budget": 1024}, "not supported together"),
    ({"thinking_level": "THINK_HARDER"}, "thinking_config.thinking_level"),
]


@pytest.mark.parametrize(("thinking", "message"), GEMINI_REFUSALS)
async def test_simulator_refuses_thinking_levels_gemini_refuses(
    h: Harness, thinking: dict[str, Any], message: str
) -> None:
    # An httpx2 client of its own: with aiohttp installed, google-genai would otherwise build its own aiohttp
    # session by subclassing ClientSession, which aiohttp warns against (an error under pytest).
    transport = httpx2.AsyncClient()
    http = genai_types.HttpOptions(
        base_url=h.sim.base_url,
        api_version="v1beta",
        httpx_async_client=transport,
        retry_options=genai_types.HttpRetryOptions(attempts=1),
    )
    client = genai.Client(api_key="sim-key", http_options=http)
    config: Any = {"thinking_config": thinking}
    known = thinking["thinking_level"] in genai_types.ThinkingLevel.__members__
    # The SDK only warns about a level it does not know, and sends it.
    try:
        with contextlib.nullcontext() if known else pytest.warns(UserWarning, match="not a valid ThinkingLevel"):
            with pytest.raises(genai_errors.ClientError) as info:
                await client.aio.models.generate_content(model="gemini-3-sim", contents="hi", config=config)
    finally:
        await client.aio.aclose()
        await transport.aclose()
    assert info.value.code == 400 and message in str(info.value)
