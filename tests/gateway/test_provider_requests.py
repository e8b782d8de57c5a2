"""What each adapter sends: our ChatRequest converted to each provider's request, read off the wire.

The simulator records every request body, so these tests check the SDK's actual HTTP request,
and the tool-loop tests send a model's tool call (with its reasoning signature) back again.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.domain.request import (
    ChatRequest,
    Finished,
    Message,
    ProviderEvent,
    Reasoning,
    ReasoningDelta,
    ResponseFormat,
    Role,
    Sampling,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoiceMode,
)
from gateway_service.providers import ProviderAdapter
from gateway_service.providers.streaming import provider_deadlines
from llm_simulator import SimulatorHandle
from tests.gateway.test_provider_streams import KEY, Adapters

WEATHER = Tool("get_weather", "Weather for a city", {"type": "object", "properties": {"city": {"type": "string"}}})


@pytest.fixture(scope="module")
async def adapters(sim: SimulatorHandle) -> AsyncIterator[Adapters]:
    made = Adapters(sim.base_url)
    yield made
    await made.close()


async def run(
    adapters: Adapters, sim: SimulatorHandle, kind: str, request: ChatRequest
) -> tuple[list[ProviderEvent], dict[str, Any]]:
    adapter: ProviderAdapter = adapters.get(kind)
    events = [e async for e in adapter.stream(request, "sim-model", deadlines=provider_deadlines(adapter.config, 5))]
    observed = sim.simulator.observations[-1]
    return events, observed.body


FULL = ChatRequest(
    model="m",
    request_id="r1",
    messages=(Message(Role.SYSTEM, "Be brief."), Message(Role.USER, "Weather in Paris?")),
    sampling=Sampling(
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        stop_sequences=("END",),
        seed=7,
        presence_penalty=0.1,
        frequency_penalty=0.2,
    ),
    max_output_tokens=50,
    tools=(WEATHER,),
    tool_choice=ToolChoiceMode.REQUIRED,
    user_id="u-1",
)


async def test_openai_request(sim: SimulatorHandle, adapters: Adapters) -> None:
    _, body = await run(adapters, sim, "openai", FULL)
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["temperature"], body["top_p"], body["seed"], body["stop"]) == (0.5, 0.9, 7, ["END"])
    assert (body["presence_penalty"], body["frequency_penalty"]) == (0.1, 0.2)
    assert body["max_completion_tokens"] == 50 and "max_tokens" not in body and "top_k" not in body
    assert body["tools"] == [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": "Weather for a city", "parameters": WEATHER.parameters},
        }
    ]
    assert body["tool_choice"] == "required" and body["user"] == "u-1"
    headers = sim.simulator.observations[-1].headers
    assert headers["authorization"] == f"Bearer {KEY}" and headers["x-stainless-retry-count"] == "0"


async def test_openai_compatible_request(sim: SimulatorHandle, adapters: Adapters) -> None:
    _, body = await run(adapters, sim, "openai_compatible", FULL)
    assert body["max_tokens"] == 50 and "max_completion_tokens" not in body
    assert body["top_k"] == 40 and body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("kind", ["openai", "openai_compatible"])
async def test_openai_json_and_forced_tool(sim: SimulatorHandle, adapters: Adapters, kind: str) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    request = replace(
        FULL,
        response_format=ResponseFormat.JSON_SCHEMA,
        json_schema=schema,
        schema_name="ans",
        tool_choice=ToolChoiceMode.TOOL,
        tool_choice_name="get_weather",
    )
    events, body = await run(adapters, sim, kind, request)
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "ans", "schema": schema}}
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert (
        "".join(e.text for e in events if isinstance(e, TextDelta)) == '{"answer": "Hello from the simulator. You '
        'said: Weather in Paris?"}'
    )
    _, body = await run(adapters, sim, kind, replace(FULL, response_format=ResponseFormat.JSON_OBJECT))
    assert body["response_format"] == {"type": "json_object"}


async def test_anthropic_request(sim: SimulatorHandle, adapters: Adapters) -> None:
    events, body = await run(adapters, sim, "anthropic", FULL)
    assert body["system"] == "Be brief."
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}]
    assert (body["temperature"], body["top_p"], body["top_k"]) == (0.5, 0.9, 40)  # sent through extra_body
    assert body["stop_sequences"] == ["END"] and body["max_tokens"] == 50 and body["stream"] is True
    assert body["tools"] == [
        {"name": "get_weather", "description": "Weather for a city", "input_schema": WEATHER.parameters}
    ]
    assert body["tool_choice"] == {"type": "any"} and body["metadata"] == {"user_id": "u-1"}
    assert "seed" not in body
    headers = sim.simulator.observations[-1].headers
    assert headers["authorization"] == f"Bearer {KEY}" and headers["x-stainless-retry-count"] == "0"


async def test_anthropic_default_max_tokens_and_json(sim: SimulatorHandle, adapters: Adapters) -> None:
    request = replace(FULL, max_output_tokens=None, response_format=ResponseFormat.JSON_OBJECT)
    _, body = await run(adapters, sim, "anthropic", request)
    assert body["max_tokens"] == 4096
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": {"type": "object"}}}


async def test_gemini_request(sim: SimulatorHandle, adapters: Adapters) -> None:
    _, body = await run(adapters, sim, "gemini", FULL)
    observed = sim.simulator.observations[-1]
    assert observed.path == "/v1beta/models/sim-model:streamGenerateContent"
    assert observed.headers["x-goog-api-key"] == KEY
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Weather in Paris?"}]}]
    assert body["systemInstruction"]["parts"] == [{"text": "Be brief."}]
    assert body["generationConfig"] == {
        "temperature": 0.5,
        "topP": 0.9,
        "topK": 40,
        "seed": 7,
        "presencePenalty": 0.1,
        "frequencyPenalty": 0.2,
        "maxOutputTokens": 50,
        "stopSequences": ["END"],
    }
    # google-genai leaves declaration fields in snake_case, which the API's JSON mapping accepts.
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parameters_json_schema": WEATHER.parameters,
                }
            ]
        }
    ]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}


async def test_gemini_json_schema(sim: SimulatorHandle, adapters: Adapters) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    request = replace(FULL, response_format=ResponseFormat.JSON_SCHEMA, json_schema=schema)
    _, body = await run(adapters, sim, "gemini", request)
    assert body["generationConfig"]["responseMimeType"] == "application/json"
    assert body["generationConfig"]["responseJsonSchema"] == schema


def assistant_turn(events: list[ProviderEvent]) -> Message:
    """The assistant message a caller rebuilds from the events, as the pipeline does."""
    calls: dict[int, list[ToolCallDelta]] = {}
    for e in events:
        if isinstance(e, ToolCallDelta):
            calls.setdefault(e.index, []).append(e)
    reasoning = Reasoning(
        text="".join(e.text for e in events if isinstance(e, ReasoningDelta)),
        signature="".join(e.signature for e in events if isinstance(e, ReasoningDelta)),
    )
    tool_calls = tuple(
        ToolCall(parts[0].id, parts[0].name, "".join(p.arguments_json for p in parts)) for parts in calls.values()
    )
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    return Message(Role.ASSISTANT, text, tool_calls=tool_calls, reasoning=(reasoning,))


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini", "cohere"])
async def test_tool_loop_round_trip(sim: SimulatorHandle, adapters: Adapters, kind: str) -> None:
    first = ChatRequest(
        model="m",
        request_id="r",
        tools=(WEATHER,),
        messages=(Message(Role.USER, '[[think:need weather]] [[call:get_weather {"city": "Paris"}]]'),),
    )
    events, _ = await run(adapters, sim, kind, first)
    turn = assistant_turn(events)
    assert turn.tool_calls[0].name == "get_weather" and turn.tool_calls[0].arguments_json == '{"city": "Paris"}'
    result = Message(Role.TOOL, '{"temp_c": 21}', tool_call_id=turn.tool_calls[0].id, name="get_weather")
    events, body = await run(adapters, sim, kind, replace(first, messages=(*first.messages, turn, result)))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == 'The tool answered: {"temp_c": 21}'
    assert isinstance(events[-1], Finished)
    sent_back = SENT_BACK[kind](body)
    assert sent_back == EXPECTED_SENT_BACK[kind](turn)


SENT_BACK = {
    "openai": lambda body: body["messages"][1:],
    "anthropic": lambda body: body["messages"][1:],
    "gemini": lambda body: body["contents"][1:],
    "cohere": lambda body: body["messages"][1:],
}
EXPECTED_SENT_BACK = {
    "openai": lambda turn: [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": turn.tool_calls[0].id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": turn.tool_calls[0].id, "content": '{"temp_c": 21}'},
    ],
    "anthropic": lambda turn: [
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "need weather", "signature": turn.reasoning[0].signature},
                {"type": "tool_use", "id": turn.tool_calls[0].id, "name": "get_weather", "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": turn.tool_calls[0].id, "content": '{"temp_c": 21}'}],
        },
    ],
    "gemini": lambda turn: [
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                    "thoughtSignature": turn.reasoning[0].signature,
                }
            ],
        },
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": {"temp_c": 21}}}}],
        },
    ],
    # Cohere's tool plan (streamed before its calls, reported as reasoning) goes back with the calls.
    "cohere": lambda turn: [
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": turn.tool_calls[0].id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
            "tool_plan": "need weather",
        },
        {"role": "tool", "tool_call_id": turn.tool_calls[0].id, "content": '{"temp_c": 21}'},
    ],
}


def test_gemini_signature_is_base64_of_what_the_upstream_sent() -> None:
    assert base64.b64decode("c2lnXzE=") == b"sig_1"


async def test_anthropic_prefill_is_continued(sim: SimulatorHandle, adapters: Adapters) -> None:
    prefix = "Hello from the"
    request = ChatRequest(
        model="m", request_id="r", messages=(Message(Role.USER, "one two"), Message(Role.ASSISTANT, prefix))
    )
    events, body = await run(adapters, sim, "anthropic", request)
    assert body["messages"][-1] == {"role": "assistant", "content": [{"type": "text", "text": prefix}]}
    assert prefix + "".join(e.text for e in events if isinstance(e, TextDelta)) == (
        "Hello from the simulator. You said: one two"
    )


TOOL_CHOICES = {
    "openai": lambda body: body.get("tool_choice"),
    "anthropic": lambda body: body.get("tool_choice"),
    "gemini": lambda body: body.get("toolConfig", {}).get("functionCallingConfig"),
}
EXPECTED_CHOICES: dict[str, dict[ToolChoiceMode, Any]] = {
    "openai": {ToolChoiceMode.AUTO: "auto", ToolChoiceMode.NONE: "none", ToolChoiceMode.REQUIRED: "required"},
    "anthropic": {
        ToolChoiceMode.AUTO: {"type": "auto"},
        ToolChoiceMode.NONE: {"type": "none"},
        ToolChoiceMode.REQUIRED: {"type": "any"},
        ToolChoiceMode.TOOL: {"type": "tool", "name": "get_weather"},
    },
    "gemini": {
        ToolChoiceMode.AUTO: {"mode": "AUTO"},
        ToolChoiceMode.NONE: {"mode": "NONE"},
        ToolChoiceMode.REQUIRED: {"mode": "ANY"},
        ToolChoiceMode.TOOL: {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
    },
}


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("mode", list(ToolChoiceMode))
async def test_tool_choice_modes(sim: SimulatorHandle, adapters: Adapters, kind: str, mode: ToolChoiceMode) -> None:
    request = replace(FULL, tool_choice=mode, tool_choice_name="get_weather")
    _, body = await run(adapters, sim, kind, request)
    expected = EXPECTED_CHOICES[kind].get(mode, {"type": "function", "function": {"name": "get_weather"}})
    assert TOOL_CHOICES[kind](body) == expected
    _, body = await run(adapters, sim, kind, replace(FULL, tool_choice=None))
    assert TOOL_CHOICES[kind](body) in (None, {})


async def test_anthropic_redacted_thinking_goes_back_unchanged(sim: SimulatorHandle, adapters: Adapters) -> None:
    first = ChatRequest(
        model="m",
        request_id="r",
        tools=(WEATHER,),
        messages=(Message(Role.USER, '[[redacted:EqOpaque==]] [[think:hm]] [[call:get_weather {"city": "Oslo"}]]'),),
    )
    events, _ = await run(adapters, sim, "anthropic", first)
    reasoning = [e for e in events if isinstance(e, ReasoningDelta)]
    assert reasoning[0] == ReasoningDelta(redacted_data="EqOpaque==")
    call = next(e for e in events if isinstance(e, ToolCallDelta) and e.id)
    turn = Message(
        Role.ASSISTANT,
        tool_calls=(ToolCall(call.id, call.name, '{"city": "Oslo"}'),),
        reasoning=(Reasoning(redacted_data="EqOpaque=="), Reasoning(text="hm", signature=reasoning[-1].signature)),
    )
    result = Message(Role.TOOL, "cold", tool_call_id=call.id)
    _, body = await run(adapters, sim, "anthropic", replace(first, messages=(*first.messages, turn, result)))
    assert body["messages"][1]["content"][:2] == [
        {"type": "redacted_thinking", "data": "EqOpaque=="},
        {"type": "thinking", "thinking": "hm", "signature": reasoning[-1].signature},
    ]


@pytest.mark.parametrize("kind", ["anthropic", "gemini", "cohere"])
async def test_unconvertible_request_is_invalid_and_never_sent(
    sim: SimulatorHandle, adapters: Adapters, kind: str
) -> None:
    """Tool-call arguments that are not JSON cannot become Anthropic `input` / Gemini `args` (nor does Cohere take
    them: refused before sending, as the other two)."""
    turn = Message(Role.ASSISTANT, tool_calls=(ToolCall("call_1", "get_weather", "{not json"),))
    request = ChatRequest(
        model="m",
        request_id="r",
        tools=(WEATHER,),
        messages=(Message(Role.USER, "hi"), turn, Message(Role.TOOL, "sunny", tool_call_id="call_1")),
    )
    before = len(sim.simulator.observations)
    with pytest.raises(ProviderError) as info:
        await run(adapters, sim, kind, request)
    assert info.value.kind is FailureKind.INVALID_REQUEST
    assert len(sim.simulator.observations) == before
