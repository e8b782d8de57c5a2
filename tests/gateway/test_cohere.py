"""The Cohere adapter: what it sends (read off the wire at the simulator), how it reads v2 stream events (the
SDK's own types), what its usage costs against Cohere's published arithmetic, its httpx client's timeouts,
and Cohere in a route through a served gateway. The shared suites (test_provider_streams, test_http_framing,
tests/hostile, test_cohere_errors) run it as every other provider."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import cohere
import httpx
import pytest

from gateway_service import config
from gateway_service.accounting import Tokens, price_of
from gateway_service.config import ModelSpec
from gateway_service.domain.failures import FailureKind, ProviderError
from gateway_service.domain.request import (
    ChatRequest,
    Finished,
    FinishReason,
    Message,
    ReasoningDelta,
    ReasoningEffort,
    ReasoningOptions,
    ResponseFormat,
    Role,
    TextDelta,
    ToolCallDelta,
    ToolChoiceMode,
    UsageReport,
)
from gateway_service.providers import cohere as cohere_adapter
from gateway_service.providers import create_adapter
from gateway_service.providers.cohere_convert import EventTranslator
from gateway_service.providers.cohere_skips import UNQUOTED
from gateway_service.providers.http import TransportSettings
from gateway_service.providers.streaming import provider_deadlines
from llm_simulator import SimulatorHandle
from llmgateway.v1 import chat_service_pb2 as pb
from tests.gateway.e2e_helpers import Upstream, kinds, serving, stream, text_of, user
from tests.gateway.rawhttp import KEEP, Answer, raw_upstream, sse_frames, with_length
from tests.gateway.test_provider_requests import FULL, WEATHER
from tests.gateway.test_provider_streams import KEY, Adapters, config_for

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
async def adapters(sim: SimulatorHandle) -> AsyncIterator[Adapters]:
    made = Adapters(sim.base_url)
    yield made
    await made.close()


async def sent(adapters: Adapters, sim: SimulatorHandle, request: ChatRequest) -> tuple[list[Any], dict[str, Any]]:
    adapter = adapters.get("cohere")
    events = [e async for e in adapter.stream(request, "command-a", deadlines=provider_deadlines(adapter.config, 5))]
    observed = sim.simulator.observations[-1]
    assert observed.path == "/v2/chat"
    return events, observed.body


async def test_the_request_on_the_wire(sim: SimulatorHandle, adapters: Adapters) -> None:
    _, body = await sent(adapters, sim, FULL)
    assert body["model"] == "command-a" and body["stream"] is True
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    sampling = ("temperature", "p", "k", "seed", "presence_penalty", "frequency_penalty", "stop_sequences")
    assert [body[k] for k in sampling] == [0.5, 0.9, 40, 7, 0.1, 0.2, ["END"]]
    assert body["max_tokens"] == 50 and body["tool_choice"] == "REQUIRED"
    function = {"name": "get_weather", "description": "Weather for a city", "parameters": WEATHER.parameters}
    assert body["tools"] == [{"type": "function", "function": function}]
    assert "thinking" not in body and "response_format" not in body
    headers = sim.simulator.observations[-1].headers
    assert headers["authorization"] == f"Bearer {KEY}" and headers["accept-encoding"] == "identity"


@pytest.mark.parametrize(
    "changes,field,value",
    [
        ({"tool_choice": ToolChoiceMode.NONE}, "tool_choice", "NONE"),
        ({"tool_choice": ToolChoiceMode.AUTO}, "tool_choice", None),  # Cohere's default: left out
        ({"response_format": ResponseFormat.JSON_OBJECT}, "response_format", {"type": "json_object"}),
        (
            {"response_format": ResponseFormat.JSON_SCHEMA, "json_schema": {"type": "object"}},
            "response_format",
            {"type": "json_object", "json_schema": {"type": "object"}},
        ),
        ({"reasoning": ReasoningOptions(effort=ReasoningEffort.NONE)}, "thinking", {"type": "disabled"}),
        (
            {"reasoning": ReasoningOptions(budget_tokens=2048)},
            "thinking",
            {"type": "enabled", "token_budget": 2048},
        ),
    ],
)
async def test_options_on_the_wire(
    sim: SimulatorHandle, adapters: Adapters, changes: dict[str, Any], field: str, value: Any
) -> None:
    _, body = await sent(adapters, sim, replace(FULL, **{"tools": (), "tool_choice": None, **changes}))
    assert body.get(field) == value


async def test_a_named_tool_choice_is_refused_before_sending(sim: SimulatorHandle, adapters: Adapters) -> None:
    before = len(sim.simulator.observations)
    with pytest.raises(ProviderError) as info:
        await sent(adapters, sim, replace(FULL, tool_choice=ToolChoiceMode.TOOL, tool_choice_name="get_weather"))
    assert (info.value.kind, info.value.field) == (FailureKind.INVALID_REQUEST, "tool_choice")
    assert len(sim.simulator.observations) == before


async def test_thinking_streams_as_reasoning_before_the_answer(sim: SimulatorHandle, adapters: Adapters) -> None:
    request = ChatRequest(model="m", request_id="r", messages=(Message(Role.USER, "[[think:a b]] [[reply:done]]"),))
    events, _ = await sent(adapters, sim, request)
    assert events[:3] == [ReasoningDelta(text="a"), ReasoningDelta(text=" b"), TextDelta("done")]
    usage, finished = events[3:]
    assert usage == UsageReport(input_tokens=3, output_tokens=3)  # billed units, not the raw counts (+7)
    assert isinstance(finished, Finished) and finished.upstream_request_id.startswith("req_sim")


def event(data: dict[str, Any]) -> Any:
    """A stream event as the SDK hands it over (its own pydantic type, by `type`)."""
    types = {
        "message-start": cohere.MessageStartV2ChatStreamResponse,
        "content-delta": cohere.ContentDeltaV2ChatStreamResponse,
        "tool-plan-delta": cohere.ToolPlanDeltaV2ChatStreamResponse,
        "tool-call-start": cohere.ToolCallStartV2ChatStreamResponse,
        "tool-call-delta": cohere.ToolCallDeltaV2ChatStreamResponse,
        "citation-start": cohere.CitationStartV2ChatStreamResponse,
        "message-end": cohere.MessageEndV2ChatStreamResponse,
    }
    return types[data["type"]].model_validate(data)


def end(reason: str, usage: dict[str, Any] | None = None, error: str | None = None) -> Any:
    return event({"type": "message-end", "delta": {"finish_reason": reason, "usage": usage, "error": error}})


@pytest.mark.parametrize(
    "reason,finish",
    [
        ("COMPLETE", FinishReason.STOP),
        ("STOP_SEQUENCE", FinishReason.STOP),
        ("MAX_TOKENS", FinishReason.LENGTH),
        ("TOOL_CALL", FinishReason.TOOL_CALLS),
        ("SOMETHING_NEW", FinishReason.STOP),
    ],
)
def test_finish_reasons(reason: str, finish: FinishReason) -> None:
    translator = EventTranslator("")
    translator.feed(event({"type": "message-start", "id": "gen-1"}))
    translator.feed(end(reason))
    assert translator.finish() == [Finished(finish, "gen-1")]


@pytest.mark.parametrize("reason,kind", [("ERROR", FailureKind.SERVER_ERROR), ("TIMEOUT", FailureKind.TIMEOUT)])
def test_a_failed_message_end_is_a_failure_not_an_answer(reason: str, kind: FailureKind) -> None:
    translator = EventTranslator("")
    translator.feed(event({"type": "message-start", "id": "gen-2"}))
    with pytest.raises(ProviderError) as info:
        translator.feed(end(reason, error="model overloaded"))
    assert (info.value.kind, info.value.upstream_request_id) == (kind, "gen-2")
    assert "model overloaded" in info.value.message and not translator.complete


def test_tool_plan_and_calls() -> None:
    translator = EventTranslator("")
    call = {"id": "get_weather_x1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    stream = [
        {"type": "message-start", "id": "gen-3", "delta": {"message": {"role": "assistant"}}},
        {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "I will check."}}},
        {"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": call}}},
        {
            "type": "tool-call-delta",
            "index": 0,
            "delta": {"message": {"tool_calls": {"function": {"arguments": "{}"}}}},
        },
        {"type": "citation-start", "index": 0, "delta": {"message": {"citations": {"start": 0, "end": 1}}}},
    ]
    events = [e for data in stream for e in translator.feed(event(data))]
    assert events == [
        ReasoningDelta(text="I will check."),
        ToolCallDelta(index=0, id="get_weather_x1", name="get_weather"),
        ToolCallDelta(index=0, arguments_json="{}"),
    ]


def test_an_event_the_sdk_could_not_read_is_malformed() -> None:
    """The SDK hands an event whose data is not JSON over as a bare message-start holding the raw data."""
    translator = EventTranslator("")
    translator.feed(event({"type": "message-start", "id": "gen-4"}))
    with pytest.raises(ProviderError) as info:
        translator.feed(cohere.MessageStartV2ChatStreamResponse.model_validate({"data": '{"type": "conte'}))
    assert info.value.kind is FailureKind.MALFORMED_RESPONSE


def test_a_stream_without_message_end_is_truncated() -> None:
    translator = EventTranslator("")
    translator.feed(event({"type": "message-start", "id": "gen-5"}))
    with pytest.raises(ProviderError) as info:
        translator.finish()
    assert info.value.kind is FailureKind.TRUNCATED


COMMAND_A = ModelSpec(name="command-a-03-2025", input_usd_per_mtok=Decimal("2.50"), output_usd_per_mtok=Decimal("10"))
COMMAND_R7B = ModelSpec(
    name="command-r7b-12-2024", input_usd_per_mtok=Decimal("0.0375"), output_usd_per_mtok=Decimal("0.15")
)


@pytest.mark.parametrize(
    "model,usage,report,published",
    [
        # Cohere's own example of billed against raw counts ("How does Cohere pricing work"): it bills the
        # billed_units, 6,772 x $2.50 + 248 x $10 for Command A (the raw 7,596 / 645 would cost $0.02544).
        (
            COMMAND_A,
            {
                "billed_units": {"input_tokens": 6772, "output_tokens": 248},
                "tokens": {"input_tokens": 7596, "output_tokens": 645},
            },
            UsageReport(6772, 248),
            Decimal("0.01941"),
        ),
        # Command R7B: 1,000,000 x $0.0375 + 40,000 x $0.15.
        (
            COMMAND_R7B,
            {"billed_units": {"input_tokens": 1_000_000, "output_tokens": 40_000}},
            UsageReport(1_000_000, 40_000),
            Decimal("0.0435"),
        ),
        # No billed_units: the raw counts; 2,000 of 10,000 prompt tokens hit Cohere's cache, at the input price
        # while no cached price is configured: 10,000 x $2.50 + 100 x $10.
        (
            COMMAND_A,
            {"tokens": {"input_tokens": 10_000, "output_tokens": 100}, "cached_tokens": 2000},
            UsageReport(10_000, 100, cached_input_tokens=2000),
            Decimal("0.026"),
        ),
    ],
    ids=["command-a-billed", "command-r7b", "raw-with-cache"],
)
def test_a_known_usage_block_costs_what_cohere_bills(
    model: ModelSpec, usage: dict[str, Any], report: UsageReport, published: Decimal
) -> None:
    translator = EventTranslator("")
    translator.feed(event({"type": "message-start", "id": "gen-6"}))
    translator.feed(end("COMPLETE", usage))
    reported, _ = translator.finish()
    assert reported == report
    assert isinstance(reported, UsageReport) and price_of(model).cost(Tokens.of(reported)) == published


@pytest.mark.parametrize("stack", ["aiohttp", "httpx"])
async def test_the_clients_read_timeout_is_a_timeout(stack: str) -> None:
    """The stack's own read timeout (the Pacer's budgets are longer), through cohere's httpx client."""
    silent = Answer(b"", then=KEEP)
    async with raw_upstream(lambda n: silent) as (_, port):
        client = cohere_adapter.http_client(TransportSettings(http_client=stack), httpx.Timeout(5, read=0.1))
        try:
            with pytest.raises(httpx.TimeoutException) as info:
                await client.post(f"http://127.0.0.1:{port}/", content=b"{}")
        finally:
            await client.aclose()
    error = cohere_adapter.map_error(info.value)
    assert error.kind is FailureKind.TIMEOUT and str(port) in error.message, error


async def test_a_route_fails_over_to_cohere_and_costs_it(sim: SimulatorHandle) -> None:
    data = {
        "providers": [
            Upstream("first", "openai", "gpt-4o-mini").entry(sim.base_url),
            Upstream("co", "cohere", "command-a").entry(sim.base_url),
        ],
        "routes": {"default": ["first/gpt-4o-mini", "co/command-a"]},
    }
    cfg = config.parse(data, source="test", env={"SIM_KEY": "sk-sim-key-1234"})
    async with serving(sim, cfg) as h:
        events = await stream(
            h, pb.StreamChatRequest(model="default", messages=user("one two [[fault:503 api=openai]]"), request_id="c1")
        )
    assert kinds(events)[:3] == ["started", "failover", "started"]
    assert events[2].started.provider == "co" and text_of(events) == "Hello from the simulator. You said: one two"
    (usage,) = [e.usage for e in events if e.WhichOneof("event") == "usage"]
    # The simulator bills the prompt's four words and the answer's eight, at $1 and $2 a million (e2e_helpers).
    assert (usage.provider, usage.input_tokens, usage.output_tokens, usage.cost) == ("co", 4, 8, "0.000020000000")
    assert usage.cost_usd == pytest.approx(0.00002)


POISON = "SECRET-MODEL-TEXT-42"
# An event that does not fit the SDK's types (index is no integer), and one whose data is not JSON at all.
UNFIT = (
    b'event: content-delta\ndata: {"type":"content-delta","index":"x",'
    b'"delta":{"message":{"content":{"text":"%s"}}}}\n\n'
)
NOT_JSON = b'event: content-delta\ndata: {"type":"content-delta","text":"%s\n\n'


@pytest.mark.parametrize("bad", [UNFIT, NOT_JSON], ids=["unfit", "not-json"])
async def test_an_event_the_sdk_skips_fails_the_attempt_and_is_logged_without_its_text(
    bad: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    frames = sse_frames("cohere", "hello")
    body = b"".join([*frames[:3], bad % POISON.encode(), *frames[3:]])  # after message-start, content-start, "hello"
    async with raw_upstream(lambda n: Answer(with_length(body))) as (_, port):
        adapter = create_adapter(config_for("cohere", f"http://127.0.0.1:{port}"))
        events: list[Any] = []
        try:
            with caplog.at_level(logging.DEBUG), pytest.raises(ProviderError) as info:
                async for e in adapter.stream(chat_request(), "m", deadlines=provider_deadlines(adapter.config, 5)):
                    events.append(e)
        finally:
            await adapter.aclose()
    assert info.value.kind is FailureKind.MALFORMED_RESPONSE and "could not read" in info.value.message
    assert events == [TextDelta("hello")]  # nothing after the skipped event: the answer is never passed off whole
    logged = [r.getMessage() for r in caplog.records]
    assert UNQUOTED in logged and not [line for line in logged if POISON in line]


def chat_request() -> ChatRequest:
    return ChatRequest(model="m", messages=(Message(Role.USER, "hi"),), request_id="skip")
