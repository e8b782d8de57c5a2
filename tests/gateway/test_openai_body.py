"""The OpenAI adapter posts build_params' JSON through the SDK's own client instead of calling
`chat.completions.create(**params)` (which spends ~0.2 ms re-walking the parameters): the HTTP
request must be the one `create` would have sent, for every shape of request we build."""

from __future__ import annotations

from dataclasses import replace

import httpx2
import openai
import pytest

from gateway_service.domain.request import (
    ChatRequest,
    Finished,
    Message,
    ReasoningEffort,
    ReasoningOptions,
    ResponseFormat,
    Role,
    Sampling,
    Tool,
    ToolCall,
    ToolChoiceMode,
)
from gateway_service.providers.openai import OpenAIAdapter
from gateway_service.providers.openai_convert import build_params
from gateway_service.providers.streaming import provider_deadlines
from llm_simulator import SimulatorHandle
from tests.gateway.test_provider_streams import KEY, config_for

WEATHER = Tool("get_weather", "Weather for a city", {"type": "object", "properties": {"city": {"type": "string"}}})
PLAIN = ChatRequest(model="m", messages=(Message(Role.USER, "hi"),), request_id="r")
RICH = ChatRequest(
    model="m",
    messages=(
        Message(Role.SYSTEM, "Be brief."),
        Message(Role.USER, "Weather in Paris?"),
        Message(Role.ASSISTANT, "", tool_calls=(ToolCall("call_1", "get_weather", '{"city": "Paris"}'),)),
        Message(Role.TOOL, '{"temp": 21}', tool_call_id="call_1", name="get_weather"),
        Message(Role.USER, "And tomorrow?"),
    ),
    request_id="r",
    sampling=Sampling(
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        stop_sequences=("END",),
        seed=7,
        presence_penalty=0.1,
        frequency_penalty=0.2,
    ),  # top_k: extra_body, for openai_compatible only
    max_output_tokens=64,
    tools=(WEATHER,),
    tool_choice=ToolChoiceMode.TOOL,
    tool_choice_name="get_weather",
    user_id="user-1",
)
SCHEMA = replace(
    PLAIN,
    response_format=ResponseFormat.JSON_SCHEMA,
    json_schema={"type": "object", "properties": {"a": {"type": "integer"}}},
    schema_name="answer",
)

REASONING = replace(RICH, reasoning=ReasoningOptions(effort=ReasoningEffort.HIGH, include_text=False))


@pytest.mark.parametrize("kind", ["openai", "openai_compatible"])
@pytest.mark.parametrize(
    "request_", [PLAIN, RICH, SCHEMA, REASONING], ids=["plain", "rich", "json_schema", "reasoning"]
)
async def test_adapter_sends_what_create_would(sim: SimulatorHandle, kind: str, request_: ChatRequest) -> None:
    config = config_for(kind, sim.base_url)
    adapter = OpenAIAdapter(config)
    timeout = httpx2.Timeout(config.timeout_s, connect=config.connect_timeout_s)
    client = openai.AsyncOpenAI(api_key=KEY, base_url=config.base_url, max_retries=0, timeout=timeout)
    try:
        deadlines = provider_deadlines(adapter.config, 5)
        events = [e async for e in adapter.stream(request_, "sim-model", deadlines=deadlines)]
        ours = sim.simulator.observations[-1]
        params = build_params(request_, "sim-model", compatible=kind != "openai")
        stream = await client.chat.completions.create(**params)
        async for _ in stream:
            pass
        theirs = sim.simulator.observations[-1]
    finally:
        await adapter.aclose()
        await client.close()
    assert isinstance(events[-1], Finished)
    assert ours is not theirs and ours.path == theirs.path
    assert ours.body == theirs.body
    assert ours.headers["authorization"] == f"Bearer {KEY}"
    # The same client settings give the same headers, key included, but for the one the gateway sets on purpose:
    # it asks for an uncompressed body so its caps count what the SDK reads (providers/bounds.py).
    assert ours.headers["accept-encoding"] == "identity"
    assert {**ours.headers, "accept-encoding": ""} == {**theirs.headers, "accept-encoding": ""}
